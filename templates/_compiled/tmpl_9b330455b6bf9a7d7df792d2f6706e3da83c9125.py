from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'delete/body.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.txt', 'delete/body.txt')
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
    yield 'Object deleted from '
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
        t_2 = environment.filters['utc']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No filter named 'utc' found.")
    try:
        t_3 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_3(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    if environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'soft_delete_time'):
        pass
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
        yield ' was soft-deleted from bucket '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
        yield '. It can be restored until '
        yield str(environment.finalize(t_2(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'hard_delete_time'))))
        yield '.'
    elif environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation'):
        pass
        yield 'Generation '
        yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation')))
        yield ' of '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
        yield ' was deleted from bucket '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
        yield ' because a new upload (generation '
        yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation')))
        yield ') replaced it.'
    else:
        pass
        yield 'Generation '
        yield str(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_3(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else '(unknown)')))
        yield ' of '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
        yield ' was deleted from bucket '
        yield str(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
        yield ': removed, or replaced by a newer upload.'

blocks = {'headline': block_headline, 'summary': block_summary}
debug_info = '1=12&2=17&3=35&4=64&5=70&6=73&8=84'
source_sha256 = '586b008db10cadcd44766e58079defff3592e2e7440a2b7a53c99f69ca31eeb5'
jinja_version = '3.1.6'
