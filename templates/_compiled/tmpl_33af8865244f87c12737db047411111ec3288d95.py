from jinja2.runtime import LoopContext, Macro, Markup, Namespace, TemplateNotFound, TemplateReference, TemplateRuntimeError, Undefined, escape, identity, internalcode, markup_join, missing, str_join
name = 'digest/body.html'

def root(context, missing=missing):
    resolve = context.resolve_or_missing
    undefined = environment.undefined
    concat = environment.concat
    cond_expr_undefined = Undefined
    if 0: yield None
    l_0_count = resolve('count')
    l_0_what = resolve('what')
    l_0_location = resolve('location')
    l_0_kinds = resolve('kinds')
    l_0_period = resolve('period')
    l_0_redirected_from = resolve('redirected_from')
    l_0_period_local = resolve('period_local')
    l_0_total_size = resolve('total_size')
    l_0_unknown_sizes = resolve('unknown_sizes')
    l_0_rule = resolve('rule')
    l_0_grouped_by = resolve('grouped_by')
    l_0_more = resolve('more')
    l_0_objects = resolve('objects')
    l_0_list_commands = resolve('list_commands')
    l_0_folders = resolve('folders')
    l_0_more_folders = resolve('more_folders')
    l_0_css_mono = l_0_css_td = l_0_css_body = l_0_css_wrapper = l_0_css_card = l_0_css_content = l_0_css_h1 = l_0_css_p = l_0_css_note = l_0_css_facts = l_0_css_th = l_0_css_td_mono = l_0_css_footer = l_0_css_list = l_0_css_h2 = l_0_css_object = l_0_css_link = l_0_css_detail = l_0_css_count = l_0_css_code = missing
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
        t_3 = environment.filters['size']
    except KeyError:
        @internalcode
        def t_3(*unused):
            raise TemplateRuntimeError("No filter named 'size' found.")
    try:
        t_4 = environment.filters['utc']
    except KeyError:
        @internalcode
        def t_4(*unused):
            raise TemplateRuntimeError("No filter named 'utc' found.")
    try:
        t_5 = environment.tests['none']
    except KeyError:
        @internalcode
        def t_5(*unused):
            raise TemplateRuntimeError("No test named 'none' found.")
    pass
    included_template = environment.get_template('styles.html', 'digest/body.html')._get_default_module(context)
    l_0_css_mono = getattr(included_template, 'css_mono', missing)
    if l_0_css_mono is missing:
        l_0_css_mono = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_mono'", name='css_mono')
    l_0_css_td = getattr(included_template, 'css_td', missing)
    if l_0_css_td is missing:
        l_0_css_td = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_td'", name='css_td')
    l_0_css_body = getattr(included_template, 'css_body', missing)
    if l_0_css_body is missing:
        l_0_css_body = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_body'", name='css_body')
    l_0_css_wrapper = getattr(included_template, 'css_wrapper', missing)
    if l_0_css_wrapper is missing:
        l_0_css_wrapper = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_wrapper'", name='css_wrapper')
    l_0_css_card = getattr(included_template, 'css_card', missing)
    if l_0_css_card is missing:
        l_0_css_card = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_card'", name='css_card')
    l_0_css_content = getattr(included_template, 'css_content', missing)
    if l_0_css_content is missing:
        l_0_css_content = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_content'", name='css_content')
    l_0_css_h1 = getattr(included_template, 'css_h1', missing)
    if l_0_css_h1 is missing:
        l_0_css_h1 = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_h1'", name='css_h1')
    l_0_css_p = getattr(included_template, 'css_p', missing)
    if l_0_css_p is missing:
        l_0_css_p = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_p'", name='css_p')
    l_0_css_note = getattr(included_template, 'css_note', missing)
    if l_0_css_note is missing:
        l_0_css_note = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_note'", name='css_note')
    l_0_css_facts = getattr(included_template, 'css_facts', missing)
    if l_0_css_facts is missing:
        l_0_css_facts = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_facts'", name='css_facts')
    l_0_css_th = getattr(included_template, 'css_th', missing)
    if l_0_css_th is missing:
        l_0_css_th = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_th'", name='css_th')
    l_0_css_td_mono = getattr(included_template, 'css_td_mono', missing)
    if l_0_css_td_mono is missing:
        l_0_css_td_mono = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_td_mono'", name='css_td_mono')
    l_0_css_footer = getattr(included_template, 'css_footer', missing)
    if l_0_css_footer is missing:
        l_0_css_footer = undefined(f"the template {included_template.__name__!r} (imported on line 3 in 'digest/body.html') does not export the requested name 'css_footer'", name='css_footer')
    context.vars.update({'css_mono': l_0_css_mono, 'css_td': l_0_css_td, 'css_body': l_0_css_body, 'css_wrapper': l_0_css_wrapper, 'css_card': l_0_css_card, 'css_content': l_0_css_content, 'css_h1': l_0_css_h1, 'css_p': l_0_css_p, 'css_note': l_0_css_note, 'css_facts': l_0_css_facts, 'css_th': l_0_css_th, 'css_td_mono': l_0_css_td_mono, 'css_footer': l_0_css_footer})
    context.exported_vars.difference_update(('css_mono', 'css_td', 'css_body', 'css_wrapper', 'css_card', 'css_content', 'css_h1', 'css_p', 'css_note', 'css_facts', 'css_th', 'css_td_mono', 'css_footer'))
    l_0_css_list = 'width: 100%; border-collapse: collapse; font-size: 14px; line-height: 20px; margin: 0 0 16px 0;'
    context.vars['css_list'] = l_0_css_list
    context.exported_vars.add('css_list')
    l_0_css_h2 = 'margin: 16px 0 8px 0; font-size: 16px; line-height: 24px; font-weight: 500;'
    context.vars['css_h2'] = l_0_css_h2
    context.exported_vars.add('css_h2')
    l_0_css_object = 'padding: 6px 0; vertical-align: top; border-top: 1px solid #e8eaed; word-break: break-all;'
    context.vars['css_object'] = l_0_css_object
    context.exported_vars.add('css_object')
    l_0_css_link = "color: #1a73e8; text-decoration: none; font-family: 'Roboto Mono', Menlo, Consolas, monospace; font-size: 13px;"
    context.vars['css_link'] = l_0_css_link
    context.exported_vars.add('css_link')
    l_0_css_detail = 'color: #5f6368; font-size: 12px; line-height: 18px;'
    context.vars['css_detail'] = l_0_css_detail
    context.exported_vars.add('css_detail')
    l_0_css_count = 'padding: 6px 0 6px 12px; text-align: right; vertical-align: top; border-top: 1px solid #e8eaed; white-space: nowrap;'
    context.vars['css_count'] = l_0_css_count
    context.exported_vars.add('css_count')
    l_0_css_code = environment.bounded_concatenation(markup_join((environment.sized_text((undefined(name='css_mono') if l_0_css_mono is missing else l_0_css_mono)), environment.sized_text(' display: block; margin: 4px 0 0 0; padding: 8px 12px; background: #f1f3f4; border-radius: 4px; word-break: break-all;'), )))
    context.vars['css_code'] = l_0_css_code
    context.exported_vars.add('css_code')
    yield '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">\n<meta name="color-scheme" content="light">\n<title>'
    yield escape(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' '
    yield escape(environment.finalize((undefined(name='what') if l_0_what is missing else l_0_what)))
    yield ' in '
    yield escape(environment.finalize((undefined(name='location') if l_0_location is missing else l_0_location)))
    yield '</title>\n</head>\n<body style="'
    yield escape(environment.finalize((undefined(name='css_body') if l_0_css_body is missing else l_0_css_body)))
    yield '">\n<div style="display:none;max-height:0;overflow:hidden;">'
    l_1_loop = missing
    for l_1_k, l_1_loop in LoopContext(environment.bounded_loop((undefined(name='kinds') if l_0_kinds is missing else l_0_kinds)), undefined):
        _loop_vars = {}
        pass
        yield escape(environment.finalize(environment.getattr(l_1_k, 'count')))
        yield ' '
        yield escape(environment.finalize(environment.getattr(l_1_k, 'words')))
        if (not environment.getattr(l_1_loop, 'last')):
            pass
            yield ', '
    l_1_loop = l_1_k = missing
    yield ', '
    yield escape(environment.finalize((undefined(name='period') if l_0_period is missing else l_0_period)))
    yield '</div>\n<table role="presentation" class="wrapper" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_wrapper') if l_0_css_wrapper is missing else l_0_css_wrapper)))
    yield '"><tr><td>\n<table role="presentation" class="card" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_card') if l_0_css_card is missing else l_0_css_card)))
    yield '">\n  <tr><td class="bar" style="height: 6px; border-radius: 8px 8px 0 0; background: #f29900; font-size: 0; line-height: 0;">&nbsp;</td></tr>\n  <tr><td class="content" style="'
    yield escape(environment.finalize((undefined(name='css_content') if l_0_css_content is missing else l_0_css_content)))
    yield '">'
    if (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from):
        pass
        yield '\n    <p class="note" style="'
        yield escape(environment.finalize((undefined(name='css_note') if l_0_css_note is missing else l_0_css_note)))
        yield '">Redirected for testing: meant for '
        yield escape(environment.finalize(t_1(context.eval_ctx, (undefined(name='redirected_from') if l_0_redirected_from is missing else l_0_redirected_from), ', ')))
        yield '.</p>'
    yield '\n    <h1 style="'
    yield escape(environment.finalize((undefined(name='css_h1') if l_0_css_h1 is missing else l_0_css_h1)))
    yield '">'
    yield escape(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' '
    yield escape(environment.finalize((undefined(name='what') if l_0_what is missing else l_0_what)))
    yield ' in <span style="word-break: break-all;">'
    yield escape(environment.finalize((undefined(name='location') if l_0_location is missing else l_0_location)))
    yield '</span></h1>\n    <p style="'
    yield escape(environment.finalize((undefined(name='css_p') if l_0_css_p is missing else l_0_css_p)))
    yield '">'
    l_1_loop = missing
    for l_1_k, l_1_loop in LoopContext(environment.bounded_loop((undefined(name='kinds') if l_0_kinds is missing else l_0_kinds)), undefined):
        _loop_vars = {}
        pass
        yield escape(environment.finalize(environment.getattr(l_1_k, 'count')))
        yield ' '
        yield escape(environment.finalize(environment.getattr(l_1_k, 'words')))
        if (not environment.getattr(l_1_loop, 'last')):
            pass
            yield ', '
    l_1_loop = l_1_k = missing
    yield ', '
    yield escape(environment.finalize((undefined(name='period') if l_0_period is missing else l_0_period)))
    if (undefined(name='period_local') if l_0_period_local is missing else l_0_period_local):
        pass
        yield ' ('
        yield escape(environment.finalize((undefined(name='period_local') if l_0_period_local is missing else l_0_period_local)))
        yield ')'
    yield ': one email instead of '
    yield escape(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield '.</p>\n    <table role="presentation" class="facts" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_facts') if l_0_css_facts is missing else l_0_css_facts)))
    yield '">\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Period</th><td style="'
    yield escape(environment.finalize((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)))
    yield '">'
    yield escape(environment.finalize((undefined(name='period') if l_0_period is missing else l_0_period)))
    if (undefined(name='period_local') if l_0_period_local is missing else l_0_period_local):
        pass
        yield '<br>'
        yield escape(environment.finalize((undefined(name='period_local') if l_0_period_local is missing else l_0_period_local)))
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Events</th><td style="'
    yield escape(environment.finalize((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)))
    yield '">'
    l_1_loop = missing
    for l_1_k, l_1_loop in LoopContext(environment.bounded_loop((undefined(name='kinds') if l_0_kinds is missing else l_0_kinds)), undefined):
        _loop_vars = {}
        pass
        yield escape(environment.finalize(environment.getattr(l_1_k, 'count')))
        yield ' '
        yield escape(environment.finalize(environment.getattr(l_1_k, 'words')))
        if (not environment.getattr(l_1_loop, 'last')):
            pass
            yield '<br>'
    l_1_loop = l_1_k = missing
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Total size</th><td style="'
    yield escape(environment.finalize((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)))
    yield '">'
    yield escape(environment.finalize(t_3((undefined(name='total_size') if l_0_total_size is missing else l_0_total_size))))
    if ((undefined(name='unknown_sizes') if l_0_unknown_sizes is missing else l_0_unknown_sizes) and (not t_5((undefined(name='total_size') if l_0_total_size is missing else l_0_total_size)))):
        pass
        yield ', and '
        yield escape(environment.finalize((undefined(name='unknown_sizes') if l_0_unknown_sizes is missing else l_0_unknown_sizes)))
        yield ' of unknown size'
    yield '</td></tr>\n      <tr><th style="'
    yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
    yield '">Rule</th><td class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
    yield '">'
    yield escape(environment.finalize((undefined(name='rule') if l_0_rule is missing else l_0_rule)))
    yield '</td></tr>'
    if (undefined(name='grouped_by') if l_0_grouped_by is missing else l_0_grouped_by):
        pass
        yield '\n      <tr><th style="'
        yield escape(environment.finalize((undefined(name='css_th') if l_0_css_th is missing else l_0_css_th)))
        yield '">Group</th><td class="mono" style="'
        yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
        yield '">'
        yield escape(environment.finalize((undefined(name='grouped_by') if l_0_grouped_by is missing else l_0_grouped_by)))
        yield '</td></tr>'
    yield '\n    </table>\n    <h2 style="'
    yield escape(environment.finalize((undefined(name='css_h2') if l_0_css_h2 is missing else l_0_css_h2)))
    yield '">'
    if (undefined(name='more') if l_0_more is missing else l_0_more):
        pass
        yield 'The first '
        yield escape(environment.finalize(t_2((undefined(name='objects') if l_0_objects is missing else l_0_objects))))
        yield ', oldest first'
    else:
        pass
        yield 'Objects, oldest first'
    yield '</h2>\n    <table role="presentation" class="objects" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_list') if l_0_css_list is missing else l_0_css_list)))
    yield '">'
    for l_1_o in environment.bounded_loop((undefined(name='objects') if l_0_objects is missing else l_0_objects)):
        l_1_buckets = resolve('buckets')
        _loop_vars = {}
        pass
        yield '\n      <tr><td style="'
        yield escape(environment.finalize((undefined(name='css_object') if l_0_css_object is missing else l_0_css_object)))
        yield '"><a href="'
        yield escape(environment.finalize(environment.getattr(l_1_o, 'console_url')))
        yield '" style="'
        yield escape(environment.finalize((undefined(name='css_link') if l_0_css_link is missing else l_0_css_link)))
        yield '">'
        yield escape(environment.finalize((environment.getattr(l_1_o, 'short_gs_uri') if ((undefined(name='buckets') if l_1_buckets is missing else l_1_buckets) > 1) else environment.getattr(l_1_o, 'short_name'))))
        yield '</a><br>\n        <span style="'
        yield escape(environment.finalize((undefined(name='css_detail') if l_0_css_detail is missing else l_0_css_detail)))
        yield '">'
        if (t_2((undefined(name='kinds') if l_0_kinds is missing else l_0_kinds)) > 1):
            pass
            yield escape(environment.finalize(environment.getattr(l_1_o, 'change')))
            yield ' &middot; '
        yield escape(environment.finalize(t_3(environment.getattr(l_1_o, 'size'))))
        yield ' &middot; '
        yield escape(environment.finalize(t_4(environment.getattr(l_1_o, 'time'))))
        yield '</span></td></tr>'
    l_1_o = l_1_buckets = missing
    yield '\n    </table>'
    if (undefined(name='more') if l_0_more is missing else l_0_more):
        pass
        yield '\n    <p style="'
        yield escape(environment.finalize((undefined(name='css_p') if l_0_css_p is missing else l_0_css_p)))
        yield '">&hellip; and '
        yield escape(environment.finalize((undefined(name='more') if l_0_more is missing else l_0_more)))
        yield ' more. List them with:'
        for l_1_c in environment.bounded_loop((undefined(name='list_commands') if l_0_list_commands is missing else l_0_list_commands)):
            _loop_vars = {}
            pass
            if environment.getattr(l_1_c, 'note'):
                pass
                yield '<br>'
                yield escape(environment.finalize(environment.getattr(l_1_c, 'note')))
                yield ':'
            yield '<code style="'
            yield escape(environment.finalize((undefined(name='css_code') if l_0_css_code is missing else l_0_css_code)))
            yield '">'
            yield escape(environment.finalize(environment.getattr(l_1_c, 'command')))
            yield '</code>'
        l_1_c = missing
        yield '</p>'
    yield '\n    <h2 style="'
    yield escape(environment.finalize((undefined(name='css_h2') if l_0_css_h2 is missing else l_0_css_h2)))
    yield '">Folders</h2>\n    <table role="presentation" class="folders" cellpadding="0" cellspacing="0" style="'
    yield escape(environment.finalize((undefined(name='css_list') if l_0_css_list is missing else l_0_css_list)))
    yield '">'
    for l_1_f in environment.bounded_loop((undefined(name='folders') if l_0_folders is missing else l_0_folders)):
        _loop_vars = {}
        pass
        yield '\n      <tr><td class="mono" style="'
        yield escape(environment.finalize((undefined(name='css_td_mono') if l_0_css_td_mono is missing else l_0_css_td_mono)))
        yield '">'
        yield escape(environment.finalize(environment.getattr(l_1_f, 'short_location')))
        yield '</td><td style="'
        yield escape(environment.finalize((undefined(name='css_count') if l_0_css_count is missing else l_0_css_count)))
        yield '">'
        yield escape(environment.finalize(environment.getattr(l_1_f, 'count')))
        yield '</td></tr>'
    l_1_f = missing
    if (undefined(name='more_folders') if l_0_more_folders is missing else l_0_more_folders):
        pass
        yield '\n      <tr><td style="'
        yield escape(environment.finalize((undefined(name='css_td') if l_0_css_td is missing else l_0_css_td)))
        yield '">&hellip; and '
        yield escape(environment.finalize((undefined(name='more_folders') if l_0_more_folders is missing else l_0_more_folders)))
        yield ' more folders</td><td style="'
        yield escape(environment.finalize((undefined(name='css_count') if l_0_css_count is missing else l_0_css_count)))
        yield '"></td></tr>'
    yield '\n    </table>\n  </td></tr>\n  <tr><td class="footer" style="'
    yield escape(environment.finalize((undefined(name='css_footer') if l_0_css_footer is missing else l_0_css_footer)))
    yield '">\n    Sent by storage-notifier: one email for '
    yield escape(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' events of rule <span class="mono" style="'
    yield escape(environment.finalize((undefined(name='css_mono') if l_0_css_mono is missing else l_0_css_mono)))
    yield '">'
    yield escape(environment.finalize((undefined(name='rule') if l_0_rule is missing else l_0_rule)))
    yield '</span>, instead of '
    yield escape(environment.finalize((undefined(name='count') if l_0_count is missing else l_0_count)))
    yield ' emails.\n  </td></tr>\n</table>\n</td></tr></table>\n</body>\n</html>'

blocks = {}
debug_info = '3=58&4=100&5=103&6=106&7=109&8=112&9=115&10=118&17=122&19=128&20=131&21=144&22=146&24=148&25=150&26=153&28=158&29=166&30=189&31=191&32=201&33=217&34=228&35=234&36=237&39=244&40=255&41=257&42=262&43=270&46=282&47=285&48=289&50=305&51=307&52=309&53=313&55=322&56=325&60=332&61=334'
source_sha256 = '77c1f3eda956095a30aced02a5d8ae0c3f617a3a5217f9d44cafc4ec04e14787'
jinja_version = '3.1.6'
