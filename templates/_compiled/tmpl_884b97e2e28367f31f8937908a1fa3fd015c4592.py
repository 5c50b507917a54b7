from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'metadata/body.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    l_0_css_th = l_0_css_td_mono = missing
    pass
    parent_template = environment.get_template('base.html', 'metadata/body.html')
    for name, parent_block in parent_template.blocks.items():
        context.blocks.setdefault(name, []).append(parent_block)
    included_template = environment.get_template('styles.html', 'metadata/body.html')._get_default_module(context)
    l_0_css_th = getattr(included_template, 'css_th', missing)
    if l_0_css_th is missing:
        l_0_css_th = undefined(f"the template {included_template.__name__!r} (imported on line 2 in 'metadata/body.html') does not export the requested name 'css_th'", name='css_th')
    l_0_css_td_mono = getattr(included_template, 'css_td_mono', missing)
    if l_0_css_td_mono is missing:
        l_0_css_td_mono = undefined(f"the template {included_template.__name__!r} (imported on line 2 in 'metadata/body.html') does not export the requested name 'css_td_mono'", name='css_td_mono')
    context.vars.update({'css_th': l_0_css_th, 'css_td_mono': l_0_css_td_mono})
    context.exported_vars.difference_update(('css_th', 'css_td_mono'))
    yield from parent_template.root_render_func(context)

def block_title(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    pass
    yield 'Metadata changed in '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))

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
    l_0_event = resolve('event')
    pass
    yield 'Metadata changed in '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))

def block_summary(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    l_0_metadata = resolve('metadata')
    try:
        t_1 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    yield 'The metadata of <strong>'
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
    yield '</strong> in bucket '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
    yield ' changed (metageneration '
    yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration') if (not t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration'))) else 'unknown')))
    yield '); its content did not.'
    if (undefined(name='metadata') if l_0_metadata is missing else l_0_metadata):
        pass
        yield ' Its custom metadata is now listed below.'

def block_extra_facts(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_css_th = resolve('css_th')
    l_0_css_td_mono = resolve('css_td_mono')
    l_0_event = resolve('event')
    try:
        t_1 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    yield '\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Metageneration</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration') if (not t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration'))) else 'unknown')))
    yield '</td></tr>'

blocks = {'title': block_title, 'accent': block_accent, 'headline': block_headline, 'summary': block_summary, 'extra_facts': block_extra_facts}
debug_info = '1=13&2=16&3=27&4=39&5=49&6=61&7=84&8=88&9=106'
source_sha256 = '404b1eb7af1135bded206af0cc0e1db99e96f3b46b0f08b301d1788a83ce382e'
jinja_version = '3.1.6'
