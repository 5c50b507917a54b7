from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'delete/subject.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_event = resolve('event')
    pass
    yield 'Deleted: '
    yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name')))
    yield ' ('
    yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket')))
    yield ')'

blocks = {}
debug_info = '1=13'
source_sha256 = '9f952a03f829246b6fd00152ae8525840ff64cf7b93bc31daee429480d488cd8'
jinja_version = '3.1.6'
