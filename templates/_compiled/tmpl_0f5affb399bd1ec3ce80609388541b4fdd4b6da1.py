from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'finalize/body.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.txt', 'finalize/body.txt')
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
    yield 'New object in '
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
    if environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwrote_generation'):
        pass
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
        yield ' was replaced in bucket '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
        yield ': generation '
        yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation')))
        yield ' is a new upload over generation '
        yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwrote_generation')))
        yield '.'
    else:
        pass
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
        yield ' was written to bucket '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
        yield ' as generation '
        yield str(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_2(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else '(unknown)')))
        yield ': a new object, or a new version of an existing one (the event does not say which).'

blocks = {'headline': block_headline, 'summary': block_summary}
debug_info = '1=12&2=17&3=35&4=58&6=68'
source_sha256 = '7a1ffd5d5727d945b78a6bd483de5a3f93baac6df6a187dabb856185b8cce2f3'
jinja_version = '3.1.6'
