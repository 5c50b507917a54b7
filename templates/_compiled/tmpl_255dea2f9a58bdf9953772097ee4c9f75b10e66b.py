from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'styles.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_css_mono = l_0_css_td = l_0_css_button = l_0_css_body = l_0_css_wrapper = l_0_css_card = l_0_css_content = l_0_css_h1 = l_0_css_p = l_0_css_note = l_0_css_facts = l_0_css_th = l_0_css_td_mono = l_0_css_actions = l_0_css_button_secondary = l_0_css_footer = l_0_css_footer_link = missing
    pass
    l_0_css_mono = "font-family: 'Roboto Mono', Menlo, Consolas, monospace; font-size: 13px;"
    context.vars['css_mono'] = l_0_css_mono
    context.exported_vars.add('css_mono')
    l_0_css_td = 'padding: 6px 0; vertical-align: top; border-top: 1px solid #e8eaed; word-break: break-all;'
    context.vars['css_td'] = l_0_css_td
    context.exported_vars.add('css_td')
    l_0_css_button = 'display: inline-block; padding: 10px 18px; border-radius: 4px; background: #1a73e8; color: #ffffff; text-decoration: none; font-size: 14px; font-weight: 500;'
    context.vars['css_button'] = l_0_css_button
    context.exported_vars.add('css_button')
    l_0_css_body = 'margin: 0; padding: 0; background: #f1f3f4; font-family: Roboto, Arial, Helvetica, sans-serif; color: #202124;'
    context.vars['css_body'] = l_0_css_body
    context.exported_vars.add('css_body')
    l_0_css_wrapper = 'width: 100%; background: #f1f3f4; padding: 24px 0;'
    context.vars['css_wrapper'] = l_0_css_wrapper
    context.exported_vars.add('css_wrapper')
    l_0_css_card = 'width: 100%; max-width: 600px; margin: 0 auto; background: #ffffff; border-radius: 8px; border-collapse: separate;'
    context.vars['css_card'] = l_0_css_card
    context.exported_vars.add('css_card')
    l_0_css_content = 'padding: 20px 24px 8px 24px; word-break: break-word;'
    context.vars['css_content'] = l_0_css_content
    context.exported_vars.add('css_content')
    l_0_css_h1 = 'margin: 0 0 8px 0; font-size: 20px; line-height: 28px; font-weight: 500;'
    context.vars['css_h1'] = l_0_css_h1
    context.exported_vars.add('css_h1')
    l_0_css_p = 'margin: 0 0 16px 0; font-size: 14px; line-height: 22px;'
    context.vars['css_p'] = l_0_css_p
    context.exported_vars.add('css_p')
    l_0_css_note = 'margin: 0 0 16px 0; font-size: 13px; line-height: 22px; padding: 8px 12px; background: #fef7e0; border-radius: 4px;'
    context.vars['css_note'] = l_0_css_note
    context.exported_vars.add('css_note')
    l_0_css_facts = 'width: 100%; border-collapse: collapse; font-size: 14px; line-height: 20px;'
    context.vars['css_facts'] = l_0_css_facts
    context.exported_vars.add('css_facts')
    l_0_css_th = 'width: 30%; padding: 6px 12px 6px 0; text-align: left; vertical-align: top; color: #5f6368; font-weight: 500; border-top: 1px solid #e8eaed;'
    context.vars['css_th'] = l_0_css_th
    context.exported_vars.add('css_th')
    l_0_css_td_mono = environment.bounded_concatenation(markup_join((environment.sized_text((undefined(name='css_mono') if l_0_css_mono is missing else l_0_css_mono)), environment.sized_text(' '), environment.sized_text((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)), )))
    context.vars['css_td_mono'] = l_0_css_td_mono
    context.exported_vars.add('css_td_mono')
    l_0_css_actions = 'padding: 8px 24px 20px 24px;'
    context.vars['css_actions'] = l_0_css_actions
    context.exported_vars.add('css_actions')
    l_0_css_button_secondary = environment.bounded_concatenation(markup_join((environment.sized_text((undefined(name='css_button') if l_0_css_button is missing else l_0_css_button)), environment.sized_text(' background: #ffffff; color: #1a73e8; border: 1px solid #dadce0;'), )))
    context.vars['css_button_secondary'] = l_0_css_button_secondary
    context.exported_vars.add('css_button_secondary')
    l_0_css_footer = 'padding: 12px 24px 20px 24px; font-size: 12px; line-height: 18px; color: #80868b; overflow-wrap: anywhere;'
    context.vars['css_footer'] = l_0_css_footer
    context.exported_vars.add('css_footer')
    l_0_css_footer_link = 'color: #80868b; word-break: break-all;'
    context.vars['css_footer_link'] = l_0_css_footer_link
    context.exported_vars.add('css_footer_link')

blocks = {}
debug_info = '4=12&5=15&6=18&7=21&8=24&9=27&10=30&11=33&12=36&13=39&14=42&15=45&16=48&17=51&18=54&19=57&20=60'
source_sha256 = 'c424ffa145c7b1fd5468b85d63b10c2c3c127e590866d73d4e0123baceb6642f'
jinja_version = '3.1.6'
