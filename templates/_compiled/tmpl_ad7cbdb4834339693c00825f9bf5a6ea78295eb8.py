from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'archive/body.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.txt', 'archive/body.txt')
    for name, parent_block in parent_template.blocks.items():
        context.blocks.setdefault(name, []).append(parent_block)
    yield from parent_template.root_render_func(context)

def block_headline(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    try:
        t_1 = environment.filters['line']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'line' found.")
    pass
    yield 'Object archived in '
    yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))

def block_summary(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    try:
        t_1 = environment.filters['line']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'line' found.")
    try:
        t_2 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    yield 'Generation '
    yield str(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_2(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else '(unknown)')))
    yield ' of '
    yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
    yield ' is no longer the live version in bucket '
    yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
    if environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation'):
        pass
        yield ': generation '
        yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation')))
        yield ' replaced it'
    else:
        pass
        yield ': it was deleted or replaced'
    yield '. Object Versioning keeps it as a noncurrent version.'

blocks = {'headline': block_headline, 'summary': block_summary}
debug_info = '1=12&2=17&3=35&4=62'
source_sha256 = 'f39dc31bb69dd4fc7980e7c11fccfb534c532c4dbae954f131a5a0a0a1928c05'
jinja_version = '3.1.6'
