from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'digest/body.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_redirected_from = resolve('redirected_from')
    l_0_count = resolve('count')
    l_0_what = resolve('what')
    l_0_location = resolve('location')
    l_0_period = resolve('period')
    l_0_period_local = resolve('period_local')
    l_0_kinds = resolve('kinds')
    l_0_total_size = resolve('total_size')
    l_0_unknown_sizes = resolve('unknown_sizes')
    l_0_rule = resolve('rule')
    l_0_grouped_by = resolve('grouped_by')
    l_0_more = resolve('more')
    l_0_objects = resolve('objects')
    l_0_list_commands = resolve('list_commands')
    l_0_folders = resolve('folders')
    l_0_more_folders = resolve('more_folders')
    try:
        t_1 = environment.filters['join']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'join' found.")
    try:
        t_2 = environment.filters['length']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No filter named 'length' found.")
    try:
        t_3 = environment.filters['line']
    except KeyError:
        @internalcode
        def t_3(*unused):
            raise TemplateRuntimeError("No filter named 'line' found.")
    try:
        t_4 = environment.filters['size']
    except KeyError:
        @internalcode
        def t_4(*unused):
            raise TemplateRuntimeError("No filter named 'size' found.")
    try:
        t_5 = environment.filters['utc']
    except KeyError:
        @internalcode
        def t_5(*unused):
            raise TemplateRuntimeError("No filter named 'utc' found.")
    try:
        t_6 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_6(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    if (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from):
        pass
        yield '[Redirected for testing: meant for '
        yield str(environment.finalize(t_3(t_1(context.eval_ctx, (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from), ', '))))
        yield ']\n\n'
    yield str(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' '
    yield str(environment.finalize((undefined(name='what') if l_0_what is missing else l_0_what)))
    yield ' in '
    yield str(environment.finalize(t_3((undefined(name='location') if l_0_location is missing else l_0_location))))
    yield '\n\nPeriod:         '
    yield str(environment.finalize((undefined(name='period') if l_0_period is missing else l_0_period)))
    if (undefined(name='period_local') if l_0_period_local is missing else l_0_period_local):
        pass
        yield ' ('
        yield str(environment.finalize((undefined(name='period_local') if l_0_period_local is missing else l_0_period_local)))
        yield ')'
    yield '\nEvents:         '
    l_1_loop = missing
    for l_1_k, l_1_loop in LoopContext(environment.bounded_loop((undefined(name='kinds') if l_0_kinds is missing else l_0_kinds)), undefined):
        _loop_vars = {}
        pass
        yield str(environment.finalize(environment.getattr(l_1_k, 'count')))
        yield ' '
        yield str(environment.finalize(environment.getattr(l_1_k, 'words')))
        if (not environment.getattr(l_1_loop, 'last')):
            pass
            yield ', '
    l_1_loop = l_1_k = missing
    yield '\nTotal size:     '
    yield str(environment.finalize(t_4((undefined(name='total_size') if l_0_total_size is missing else l_0_total_size))))
    if ((undefined(name='unknown_sizes') if l_0_unknown_sizes is missing else l_0_unknown_sizes) and (not t_6((undefined(name='total_size') if l_0_total_size is missing else l_0_total_size)))):
        pass
        yield ', and '
        yield str(environment.finalize((undefined(name='unknown_sizes') if l_0_unknown_sizes is missing else l_0_unknown_sizes)))
        yield ' of unknown size'
    yield '\nRule:           '
    yield str(environment.finalize(t_3((undefined(name='rule') if l_0_rule is missing else l_0_rule))))
    if (undefined(name='grouped_by') if l_0_grouped_by is missing else l_0_grouped_by):
        pass
        yield '\nGroup:          '
        yield str(environment.finalize(t_3((undefined(name='grouped_by') if l_0_grouped_by is missing else l_0_grouped_by))))
    yield '\n\n'
    if (undefined(name='more') if l_0_more is missing else l_0_more):
        pass
        yield 'The first '
        yield str(environment.finalize(t_2((undefined(name='objects') if l_0_objects is missing else l_0_objects))))
        yield ', oldest first:'
    else:
        pass
        yield 'Objects, oldest first:'
    for l_1_o in environment.bounded_loop((undefined(name='objects') if l_0_objects is missing else l_0_objects)):
        l_1_buckets = resolve('buckets')
        _loop_vars = {}
        pass
        yield '\n\n'
        yield str(environment.finalize(t_3((environment.getattr(l_1_o, 'gs_uri') if ((undefined(name='buckets') if l_1_buckets is missing else l_1_buckets) > 1) else environment.getattr(l_1_o, 'name')))))
        yield '\n  '
        if (t_2((undefined(name='kinds') if l_0_kinds is missing else l_0_kinds)) > 1):
            pass
            yield str(environment.finalize(t_3(environment.getattr(l_1_o, 'change'))))
            yield ', '
        yield str(environment.finalize(t_4(environment.getattr(l_1_o, 'size'))))
        yield ', '
        yield str(environment.finalize(t_5(environment.getattr(l_1_o, 'time'))))
        yield '\n  '
        yield str(environment.finalize(environment.getattr(l_1_o, 'console_url')))
    l_1_o = l_1_buckets = missing
    if (undefined(name='more') if l_0_more is missing else l_0_more):
        pass
        yield '\n\n... and '
        yield str(environment.finalize((undefined(name='more') if l_0_more is missing else l_0_more)))
        yield ' more. List them with:'
        for l_1_c in environment.bounded_loop((undefined(name='list_commands') if l_0_list_commands is missing else l_0_list_commands)):
            _loop_vars = {}
            pass
            if environment.getattr(l_1_c, 'note'):
                pass
                yield '\n  '
                yield str(environment.finalize(t_3(environment.getattr(l_1_c, 'note'))))
                yield ':'
            yield '\n  '
            yield str(environment.finalize(t_3(environment.getattr(l_1_c, 'command'))))
        l_1_c = missing
    yield '\n\nFolders:'
    for l_1_f in environment.bounded_loop((undefined(name='folders') if l_0_folders is missing else l_0_folders)):
        _loop_vars = {}
        pass
        yield '\n  '
        yield str(environment.finalize(t_3(environment.getattr(l_1_f, 'location'))))
        yield ': '
        yield str(environment.finalize(environment.getattr(l_1_f, 'count')))
    l_1_f = missing
    if (undefined(name='more_folders') if l_0_more_folders is missing else l_0_more_folders):
        pass
        yield '\n  ... and '
        yield str(environment.finalize((undefined(name='more_folders') if l_0_more_folders is missing else l_0_more_folders)))
        yield ' more folders'
    yield '\n\n--\nSent by storage-notifier: one email for '
    yield str(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' events of rule '
    yield str(environment.finalize(t_3((undefined(name='rule') if l_0_rule is missing else l_0_rule))))
    yield ', instead of '
    yield str(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' emails.'

blocks = {}
debug_info = '2=63&4=68&6=74&7=82&8=93&9=100&10=101&11=104&14=106&15=114&17=119&18=121&19=129&21=131&23=134&24=136&25=139&26=142&28=145&33=148&34=152&36=156&37=159&41=162'
source_sha256 = '82311bf546613187b10f8ad626b61f35dc4c37bb953414a0e533d54c6a752d43'
jinja_version = '3.1.6'
