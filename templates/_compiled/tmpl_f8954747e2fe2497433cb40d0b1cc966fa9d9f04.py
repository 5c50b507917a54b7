from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'delete/body.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    parent_template = None
    pass
    parent_template = environment.get_template('base.html', 'delete/body.html')
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
    yield 'Object deleted from '
    yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))

def block_accent(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass
    yield '#d93025'

def block_headline(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    l_0_event = resolve('event')
    pass
    yield 'Object deleted from '
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
        t_1 = environment.filters['utc']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'utc' found.")
    try:
        t_2 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    if environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'soft_delete_time'):
        pass
        yield '<strong>'
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
        yield '</strong> was soft-deleted from bucket '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
        yield '. It can be restored until '
        yield escape(environment.finalize(t_1(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'hard_delete_time'))))
        yield '.'
    elif environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation'):
        pass
        yield 'Generation '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation')))
        yield ' of <strong>'
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
        yield '</strong> was deleted from bucket '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
        yield ' because a new upload (generation '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'overwritten_by_generation')))
        yield ') replaced it.'
    else:
        pass
        yield 'Generation '
        yield escape(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_2(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else '(unknown)')))
        yield ' of <strong>'
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
        yield '</strong> was deleted from bucket '
        yield escape(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
        yield ': removed, or replaced by a newer upload.'

blocks = {'title': block_title, 'accent': block_accent, 'headline': block_headline, 'summary': block_summary}
debug_info = '1=12&2=17&3=29&4=39&5=51&6=75&7=81&8=84&10=95'
source_sha256 = '6f451349c556b7403dd30383031d11df947894f26a80b3bf1cff453ce70903f8'
jinja_version = '3.1.6'
