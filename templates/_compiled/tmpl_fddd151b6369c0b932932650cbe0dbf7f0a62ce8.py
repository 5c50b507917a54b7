from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'base.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_self = TemplateReference(context)
    l_0_redirected_from = resolve('redirected_from')
    l_0_notes = resolve('notes')
    l_0_event = resolve('event')
    l_0_occurred_at = resolve('occurred_at')
    l_0_metadata = resolve('metadata')
    l_0_metadata_hidden = resolve('metadata_hidden')
    l_0_gs_url = resolve('gs_url')
    l_0_gs_uri = resolve('gs_uri')
    l_0_download_url = resolve('download_url')
    l_0_console_url = resolve('console_url')
    l_0_css_mono = l_0_css_td = l_0_css_button = l_0_css_body = l_0_css_wrapper = l_0_css_card = l_0_css_content = l_0_css_h1 = l_0_css_p = l_0_css_note = l_0_css_facts = l_0_css_th = l_0_css_td_mono = l_0_css_actions = l_0_css_button_secondary = l_0_css_footer = l_0_css_footer_link = missing
    try:
        t_1 = environment.filters['dictsort']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'dictsort' found.")
    try:
        t_2 = environment.filters['join']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No filter named 'join' found.")
    try:
        t_3 = environment.filters['local']
    except KeyError:
        @internalcode
        def t_3(*unused):
            raise TemplateRuntimeError("No filter named 'local' found.")
    try:
        t_4 = environment.filters['size']
    except KeyError:
        @internalcode
        def t_4(*unused):
            raise TemplateRuntimeError("No filter named 'size' found.")
    try:
        t_5 = environment.filters['striptags']
    except KeyError:
        @internalcode
        def t_5(*unused):
            raise TemplateRuntimeError("No filter named 'striptags' found.")
    try:
        t_6 = environment.filters['utc']
    except KeyError:
        @internalcode
        def t_6(*unused):
            raise TemplateRuntimeError("No filter named 'utc' found.")
    try:
        t_7 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_7(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    included_template = environment.get_template('styles.html', 'base.html')._get_default_module(context)
    l_0_css_mono = getattr(included_template, 'css_mono', missing)
    if l_0_css_mono is missing:
        l_0_css_mono = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_mono'", name='css_mono')
    l_0_css_td = getattr(included_template, 'css_td', missing)
    if l_0_css_td is missing:
        l_0_css_td = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_td'", name='css_td')
    l_0_css_button = getattr(included_template, 'css_button', missing)
    if l_0_css_button is missing:
        l_0_css_button = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_button'", name='css_button')
    l_0_css_body = getattr(included_template, 'css_body', missing)
    if l_0_css_body is missing:
        l_0_css_body = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_body'", name='css_body')
    l_0_css_wrapper = getattr(included_template, 'css_wrapper', missing)
    if l_0_css_wrapper is missing:
        l_0_css_wrapper = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_wrapper'", name='css_wrapper')
    l_0_css_card = getattr(included_template, 'css_card', missing)
    if l_0_css_card is missing:
        l_0_css_card = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_card'", name='css_card')
    l_0_css_content = getattr(included_template, 'css_content', missing)
    if l_0_css_content is missing:
        l_0_css_content = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_content'", name='css_content')
    l_0_css_h1 = getattr(included_template, 'css_h1', missing)
    if l_0_css_h1 is missing:
        l_0_css_h1 = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_h1'", name='css_h1')
    l_0_css_p = getattr(included_template, 'css_p', missing)
    if l_0_css_p is missing:
        l_0_css_p = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_p'", name='css_p')
    l_0_css_note = getattr(included_template, 'css_note', missing)
    if l_0_css_note is missing:
        l_0_css_note = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_note'", name='css_note')
    l_0_css_facts = getattr(included_template, 'css_facts', missing)
    if l_0_css_facts is missing:
        l_0_css_facts = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_facts'", name='css_facts')
    l_0_css_th = getattr(included_template, 'css_th', missing)
    if l_0_css_th is missing:
        l_0_css_th = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_th'", name='css_th')
    l_0_css_td_mono = getattr(included_template, 'css_td_mono', missing)
    if l_0_css_td_mono is missing:
        l_0_css_td_mono = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_td_mono'", name='css_td_mono')
    l_0_css_actions = getattr(included_template, 'css_actions', missing)
    if l_0_css_actions is missing:
        l_0_css_actions = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_actions'", name='css_actions')
    l_0_css_button_secondary = getattr(included_template, 'css_button_secondary', missing)
    if l_0_css_button_secondary is missing:
        l_0_css_button_secondary = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_button_secondary'", name='css_button_secondary')
    l_0_css_footer = getattr(included_template, 'css_footer', missing)
    if l_0_css_footer is missing:
        l_0_css_footer = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_footer'", name='css_footer')
    l_0_css_footer_link = getattr(included_template, 'css_footer_link', missing)
    if l_0_css_footer_link is missing:
        l_0_css_footer_link = undefined(f"the template {included_template.__name__!r} (imported on line 4 in 'base.html') does not export the requested name 'css_footer_link'", name='css_footer_link')
    context.vars.update({'css_mono': l_0_css_mono, 'css_td': l_0_css_td, 'css_button': l_0_css_button, 'css_body': l_0_css_body, 'css_wrapper': l_0_css_wrapper, 'css_card': l_0_css_card, 'css_content': l_0_css_content, 'css_h1': l_0_css_h1, 'css_p': l_0_css_p, 'css_note': l_0_css_note, 'css_facts': l_0_css_facts, 'css_th': l_0_css_th, 'css_td_mono': l_0_css_td_mono, 'css_actions': l_0_css_actions, 'css_button_secondary': l_0_css_button_secondary, 'css_footer': l_0_css_footer, 'css_footer_link': l_0_css_footer_link})
    context.exported_vars.difference_update(('css_mono', 'css_td', 'css_button', 'css_body', 'css_wrapper', 'css_card', 'css_content', 'css_h1', 'css_p', 'css_note', 'css_facts', 'css_th', 'css_td_mono', 'css_actions', 'css_button_secondary', 'css_footer', 'css_footer_link'))
    yield '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n<meta name="color-scheme" content="light">\n<title>'
    yield from context.blocks['title'][0](context)
    yield '</title>\n</head>\n<body style="'
    yield escape(environment.finalize((undefined(name='css_body') if l_0_css_body is missing else l_0_css_body)))
    yield '">\n<div style="display:none;max-height:0;overflow:hidden;">'
    yield escape(environment.finalize(t_5(environment.call(context, environment.getattr(l_0_self, 'summary')))))
    yield '</div>\n<table role="presentation" class="wrapper" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_wrapper') if l_0_css_wrapper is missing else l_0_css_wrapper)))
    yield '"><tr><td>\n<table role="presentation" class="card" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_card') if l_0_css_card is missing else l_0_css_card)))
    yield '">\n  <tr><td class="bar" style="height: 6px; border-radius: 8px 8px 0 0; background: '
    yield from context.blocks['accent'][0](context)
    yield '; font-size: 0; line-height: 0;">&nbsp;</td></tr>\n  <tr><td class="content" style="'
    yield escape(environment.finalize((undefined(name='css_content') if l_0_css_content is missing else l_0_css_content)))
    yield '">'
    if (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from):
        pass
        yield '\n    <p class="note" style="'
        yield escape(environment.finalize((undefined(name='css_note') if l_0_css_note is missing else l_0_css_note)))
        yield '">Redirected for testing: meant for '
        yield escape(environment.finalize(t_2(context.eval_ctx, (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from), ', ')))
        yield '.</p>'
    yield '\n    <h1 style="'
    yield escape(environment.finalize((undefined(name='css_h1') if l_0_css_h1 is missing else l_0_css_h1)))
    yield '">'
    yield from context.blocks['headline'][0](context)
    yield '</h1>\n    <p style="'
    yield escape(environment.finalize((undefined(name='css_p') if l_0_css_p is missing else l_0_css_p)))
    yield '">'
    yield from context.blocks['summary'][0](context)
    yield '</p>'
    for l_1_note in environment.bounded_loop((undefined(name='notes') if l_0_notes is missing else l_0_notes)):
        _loop_vars = {}
        pass
        yield '\n    <p class="note" style="'
        yield escape(environment.finalize((undefined(name='css_note') if l_0_css_note is missing else l_0_css_note)))
        yield '">'
        yield escape(environment.finalize(l_1_note))
        yield '</p>'
    l_1_note = missing
    yield '\n    <table role="presentation" class="facts" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_facts') if l_0_css_facts is missing else l_0_css_facts)))
    yield '">\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Bucket</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Object</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Size</th><td style="'
    yield escape(environment.finalize((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)))
    yield '">'
    yield escape(environment.finalize(t_4(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'size'))))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Content type</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'content_type') or 'unknown')))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Storage class</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'storage_class') or 'unknown')))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Generation</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_7(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else 'unknown')))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Time (UTC)</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize(t_6((undefined(name='occurred_at') if l_0_occurred_at is missing else l_0_occurred_at))))
    yield '</td></tr>'
    if t_3((undefined(name='occurred_at') if l_0_occurred_at is missing else l_0_occurred_at)):
        pass
        yield '\n      <tr><th style="'
        yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
        yield '">Local time</th><td class="mono" style="'
        yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
        yield '">'
        yield escape(environment.finalize(t_3((undefined(name='occurred_at') if l_0_occurred_at is missing else l_0_occurred_at))))
        yield '</td></tr>'
    yield from context.blocks['extra_facts'][0](context)
    for (l_1_key, l_1_value) in environment.bounded_loop(t_1((undefined(name='metadata') if l_0_metadata is missing else l_0_metadata))):
        _loop_vars = {}
        pass
        yield '\n      <tr><th style="'
        yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
        yield '">Metadata</th><td class="mono" style="'
        yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
        yield '">'
        yield escape(environment.finalize(l_1_key))
        yield ' = '
        yield escape(environment.finalize(l_1_value))
        yield '</td></tr>'
    l_1_key = l_1_value = missing
    if (undefined(name='metadata_hidden') if l_0_metadata_hidden is missing else l_0_metadata_hidden):
        pass
        yield '\n      <tr><th style="'
        yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
        yield '">Metadata</th><td style="'
        yield escape(environment.finalize((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)))
        yield '">&hellip; and '
        yield escape(environment.finalize((undefined(name='metadata_hidden') if l_0_metadata_hidden is missing else l_0_metadata_hidden)))
        yield ' more</td></tr>'
    yield '\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">gs:// URI</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '"><a href="'
    yield escape(environment.finalize((undefined(name='gs_url') if l_0_gs_url is missing else l_0_gs_url)))
    yield '">'
    yield escape(environment.finalize((undefined(name='gs_uri') if l_0_gs_uri is missing else l_0_gs_uri)))
    yield '</a></td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Event ID</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'event_id')))
    yield '</td></tr>\n    </table>\n  </td></tr>\n  <tr><td class="actions" style="'
    yield escape(environment.finalize((undefined(name='css_actions') if l_0_css_actions is missing else l_0_css_actions)))
    yield '">'
    if (undefined(name='download_url') if l_0_download_url is missing else l_0_download_url):
        pass
        yield '<a class="button" href="'
        yield escape(environment.finalize((undefined(name='download_url') if l_0_download_url is missing else l_0_download_url)))
        yield '" style="'
        yield escape(environment.finalize((undefined(name='css_button') if l_0_css_button is missing else l_0_css_button)))
        yield '">Download</a>&nbsp; '
    yield '<a class="button'
    if (undefined(name='download_url') if l_0_download_url is missing else l_0_download_url):
        pass
        yield ' secondary'
    yield '" href="'
    yield escape(environment.finalize((undefined(name='console_url') if l_0_console_url is missing else l_0_console_url)))
    yield '" style="'
    yield escape(environment.finalize(((undefined(name='css_button_secondary') if l_0_css_button_secondary is missing else l_0_css_button_secondary) if (undefined(name='download_url') if l_0_download_url is missing else l_0_download_url) else (undefined(name='css_button') if l_0_css_button is missing else l_0_css_button))))
    yield '">Open in Cloud Console</a>\n  </td></tr>\n  <tr><td class="footer" style="'
    yield escape(environment.finalize((undefined(name='css_footer') if l_0_css_footer is missing else l_0_css_footer)))
    yield '">\n    Sent by storage-notifier for a <span class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_mono') if l_0_css_mono is missing else l_0_css_mono)))
    yield '">'
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'event_type')))
    yield '</span> event.\n    If the button does not work, paste this link into your browser:<br>\n    <a href="'
    yield escape(environment.finalize((undefined(name='console_url') if l_0_console_url is missing else l_0_console_url)))
    yield '" style="'
    yield escape(environment.finalize((undefined(name='css_footer_link') if l_0_css_footer_link is missing else l_0_css_footer_link)))
    yield '">'
    yield escape(environment.finalize((undefined(name='console_url') if l_0_console_url is missing else l_0_console_url)))
    yield '</a>\n  </td></tr>\n</table>\n</td></tr></table>\n</body>\n</html>'

def block_title(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

def block_accent(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass
    yield '#1a73e8'

def block_headline(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

def block_summary(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

def block_extra_facts(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

blocks = {'title': block_title, 'accent': block_accent, 'headline': block_headline, 'summary': block_summary, 'extra_facts': block_extra_facts}
debug_info = '4=65&11=120&13=122&14=124&15=126&16=128&17=130&18=132&19=134&20=137&22=142&23=146&24=150&25=154&27=160&28=162&29=168&30=174&31=180&32=186&33=192&34=198&35=204&36=207&38=213&39=214&40=218&42=227&43=230&45=237&46=245&49=251&50=253&51=261&53=269&54=271&56=275&11=282&17=291&22=301&23=310&38=319'
source_sha256 = 'fe6cb2ccb940a3e1a988ddc464281e8e67339f525e1ccd86ec8498a5c15df25a'
jinja_version = '3.1.6'
