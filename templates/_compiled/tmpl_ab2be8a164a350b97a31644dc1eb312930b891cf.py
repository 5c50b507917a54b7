from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'digest/subject.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_count = resolve('count')
    l_0_what = resolve('what')
    l_0_location = resolve('location')
    l_0_period = resolve('period')
    try:
        t_1 = environment.filters['truncate']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'truncate' found.")
    pass
    yield str(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' '
    yield str(environment.finalize((undefined(name='what') if l_0_what is missing else l_0_what)))
    yield ' in '
    yield str(environment.finalize(t_1(environment, (undefined(name='location') if l_0_location is missing else l_0_location), 120, True, '…', 0)))
    yield ' ('
    yield str(environment.finalize((undefined(name='period') if l_0_period is missing else l_0_period)))
    yield ')'

blocks = {}
debug_info = '1=21'
source_sha256 = '9e6e97ecc10e98752851c4d19aa898682e756a0a5b080dfcba38c615c0634c9d'
jinja_version = '3.1.6'
