from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'archive/body.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.html', 'archive/body.html')
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
    yield 'Object archived in '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))

def block_accent(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass
    yield '#f9ab00'

def block_headline(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    pass
    yield 'Object archived in '
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
    yield 'Generation '
    yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else '(unknown)')))
    yield ' of <strong>'
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
    yield '</strong> is no longer the live version in bucket '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
    if environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation'):
        pass
        yield ': generation '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation')))
        yield ' replaced it'
    else:
        pass
        yield ': it was deleted or replaced'
    yield '. Object Versioning keeps it as a noncurrent version.'

blocks = {'title': block_title, 'accent': block_accent, 'headline': block_headline, 'summary': block_summary}
debug_info = '1=12&2=17&3=29&4=39&5=51&6=72'
source_sha256 = 'ce76756fcec76664483aca102262fe29adb8277d326403d62a9ed08a23f60f43'
jinja_version = '3.1.6'
