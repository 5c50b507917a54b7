from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'base.txt'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_redirected_from = resolve('redirected_from')
    l_0_notes = resolve('notes')
    l_0_event = resolve('event')
    l_0_occurred_at = resolve('occurred_at')
    l_0_metadata = resolve('metadata')
    l_0_metadata_hidden = resolve('metadata_hidden')
    l_0_download_url = resolve('download_url')
    l_0_gs_uri = resolve('gs_uri')
    l_0_console_url = resolve('console_url')
    try:
        t_1 = environment.filters['dictsort']
    except KeyError:
        @internalcode
        def t_1(*unused):
            raise TemplateRuntimeError("No filter named 'dictsort' found.")
    try:
        t_2 = environment.filters['join']
    except KeyError:
        @internalcode
        def t_2(*unused):
            raise TemplateRuntimeError("No filter named 'join' found.")
    try:
        t_3 = environment.filters['line']
    except KeyError:
        @internalcode
        def t_3(*unused):
            raise TemplateRuntimeError("No filter named 'line' found.")
    try:
        t_4 = environment.filters['local']
    except KeyError:
        @internalcode
        def t_4(*unused):
            raise TemplateRuntimeError("No filter named 'local' found.")
    try:
        t_5 = environment.filters['size']
    except KeyError:
        @internalcode
        def t_5(*unused):
            raise TemplateRuntimeError("No filter named 'size' found.")
    try:
        t_6 = environment.filters['utc']
    except KeyError:
        @internalcode
        def t_6(*unused):
            raise TemplateRuntimeError("No filter named 'utc' found.")
    try:
        t_7 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_7(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    if (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from):
        pass
        yield '[Redirected for testing: meant for '
        yield str(environment.finalize(t_3(t_2(context.eval_ctx, (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from), ', '))))
        yield ']\n\n'
    yield from context.blocks['headline'][0](context)
    yield '\n\n'
    yield from context.blocks['summary'][0](context)
    for l_1_note in environment.bounded_loop((undefined(name='notes') if l_0_notes is missing else l_0_notes)):
        _loop_vars = {}
        pass
        yield '\n\n'
        yield str(environment.finalize(t_3(l_1_note)))
    l_1_note = missing
    yield '\n\nBucket:         '
    yield str(environment.finalize(t_3(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'bucket'))))
    yield '\nObject:         '
    yield str(environment.finalize(t_3(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'name'))))
    yield '\nSize:           '
    yield str(environment.finalize(t_5(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'size'))))
    yield '\nContent type:   '
    yield str(environment.finalize(t_3((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'content_type') or 'unknown'))))
    yield '\nStorage class:  '
    yield str(environment.finalize(t_3((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'storage_class') or 'unknown'))))
    yield '\nGeneration:     '
    yield str(environment.finalize((environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation') if (not t_7(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'generation'))) else 'unknown')))
    yield '\nTime (UTC):     '
    yield str(environment.finalize(t_6((undefined(name='occurred_at') if l_0_occurred_at is missing else l_0_occurred_at))))
    if t_4((undefined(name='occurred_at') if l_0_occurred_at is missing else l_0_occurred_at)):
        pass
        yield '\nLocal time:     '
        yield str(environment.finalize(t_4((undefined(name='occurred_at') if l_0_occurred_at is missing else l_0_occurred_at))))
    yield from context.blocks['extra_facts'][0](context)
    for (l_1_key, l_1_value) in environment.bounded_loop(t_1((undefined(name='metadata') if l_0_metadata is missing else l_0_metadata))):
        _loop_vars = {}
        pass
        yield '\nMetadata:       '
        yield str(environment.finalize(t_3(l_1_key)))
        yield ' = '
        yield str(environment.finalize(t_3(l_1_value)))
    l_1_key = l_1_value = missing
    if (undefined(name='metadata_hidden') if l_0_metadata_hidden is missing else l_0_metadata_hidden):
        pass
        yield '\nMetadata:       ... and '
        yield str(environment.finalize((undefined(name='metadata_hidden') if l_0_metadata_hidden is missing else l_0_metadata_hidden)))
        yield ' more'
    yield '\nEvent ID:       '
    yield str(environment.finalize(t_3(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'event_id'))))
    if (undefined(name='download_url') if l_0_download_url is missing else l_0_download_url):
        pass
        yield '\n\nDownload (signed link):\n  '
        yield str(environment.finalize((undefined(name='download_url') if l_0_download_url is missing else l_0_download_url)))
    yield '\n\ngs:// URI:\n  '
    yield str(environment.finalize(t_3((undefined(name='gs_uri') if l_0_gs_uri is missing else l_0_gs_uri))))
    yield '\n\nOpen in Cloud Console:\n  '
    yield str(environment.finalize((undefined(name='console_url') if l_0_console_url is missing else l_0_console_url)))
    yield '\n\n--\nSent by storage-notifier for a '
    yield str(environment.finalize(environment.getattr((undefined(name='event') if l_0_event is missing else l_0_event), 'event_type')))
    yield ' event.'

def block_headline(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

def block_summary(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

def block_extra_facts(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    _block_vars = {}
    pass

blocks = {'headline': block_headline, 'summary': block_summary, 'extra_facts': block_extra_facts}
debug_info = '1=62&3=67&5=69&6=70&8=74&11=77&12=79&13=81&14=83&15=85&16=87&17=89&18=90&19=93&21=94&22=95&23=99&25=103&26=106&28=109&29=110&32=113&36=115&39=117&42=119&3=122&5=131&21=140'
source_sha256 = '443427a5fdf4b3d9d9bf97e6a664ae4261caf9f8ecde74f591fd1d348d61cd93'
jinja_version = '3.1.6'
