from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'metadata/body.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.txt', 'metadata/body.txt')
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
    yield 'Metadata changed in '
    yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))

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
    yield 'The metadata of '
    yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
    yield ' in bucket '
    yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
    yield ' changed (metageneration '
    yield str(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration') if (not t_2(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration'))) else 'unknown')))
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
    l_0_event = resolve('event')
    try:
        t_2 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    yield '\nMetageneration: '
    yield str(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration') if (not t_2(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'metageneration'))) else 'unknown')))

blocks = {'headline': block_headline, 'summary': block_summary, 'extra_facts': block_extra_facts}
debug_info = '1=12&2=17&3=35&4=64&5=68&6=84'
source_sha256 = '9ef65e431f7394a4a9d304f4290bf670510eb5d3388caf9d72220cbf470ee9a5'
jinja_version = '3.1.6'
