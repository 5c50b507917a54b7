from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'finalize/body.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.html', 'finalize/body.html')
    for name, parent_block in parent_template.blocks.items():
        context.blocks.setdefault(name, []).append(parent_block)
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
    yield 'New object in '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))

def block_accent(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass
    yield '#1e8e3e'

def block_headline(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    pass
    yield 'New object in '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))

def block_summary(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    try:
        t_1 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    if environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwrote_generation'):
        pass
        yield '<strong>'
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
        yield '</strong> was replaced in bucket '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
        yield ': generation '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation')))
        yield ' is a new upload over generation '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwrote_generation')))
        yield '.'
    else:
        pass
        yield '<strong>'
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
        yield '</strong> was written to bucket '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
        yield ' as generation '
        yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else '(unknown)')))
        yield ': a new object, or a new version of an existing one (the event does not say which).'

blocks = {'title': block_title, 'accent': block_accent, 'headline': block_headline, 'summary': block_summary}
debug_info = '1=12&2=17&3=29&4=39&5=51&6=69&8=80'
source_sha256 = 'dc905f896ab758fc43bf2c62539efd5feb9947d0ccfbaa608aed418e486718be'
jinja_version = '3.1.6'
