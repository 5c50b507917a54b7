from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'metadata/subject.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_event = resolve('event')
    pass
    yield 'Metadata changed: '
    yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
    yield ' ('
    yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
    yield ')'

blocks = {}
debug_info = '1=13'
source_sha256 = 'b6929f15f0386ad4fa23410c9a0522dd0f910403758cad0db6765a5070f61e55'
jinja_version = '3.1.6'
