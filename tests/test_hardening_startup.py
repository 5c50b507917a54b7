"""Issue 12, start-up: errors name the file that failed, templates are bounded in time and size,
the rules file is bounded, and the CLI's preview and emit survive odd names and URLs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import pytest

from notifier import jinja_sandbox
from notifier.addresses import Address
from notifier.events import decode
from notifier.render import Renderer, TemplateError
from notifier.rules import Conditions, Delivery, Notification, Recipients, Rule, notification_id
from notifier.rulesfile import MAX_RULES, MAX_RULES_FILE_BYTES
from notifier.tools.cli import main
from tests.conftest import storage_cloud_event

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = Recipients(Address("alerts@example.com"), to=(Address("ops@example.com"),))
OVERFLOW = "{{ (2 ** 1100) * 1.0 }}"  # the sandbox lets it through; float() of it overflows
SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
HEADER = '[defaults]\nfrom = "alerts@example.com"\nto = "ops@example.com"\n'


pytestmark = pytest.mark.usefixtures("clean_notifier_env")


@pytest.fixture
def short_budget(monkeypatch):
    """A spinning template fails after 0.2 s instead of the real budget, to keep the suite quick."""
    monkeypatch.setattr(jinja_sandbox, "RENDER_SECONDS", 0.2)


def _templates_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / "tpl" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tpl" / name).write_text(text, encoding="utf-8")
    return tmp_path / "tpl"


def _start_up_error(tmp_path: Path, body_txt: str) -> str:
    """The start-up error for templates/finalize/body.txt holding ``body_txt``: it must name the
    file and come quickly (a generous bound: these used to spin or eat memory)."""
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        Renderer(_templates_dir(tmp_path, {"finalize/body.txt": body_txt}))
    message = str(caught.value)
    assert message.startswith("templates/finalize/body.txt: "), message
    assert time.monotonic() - started < 30, "not stuck"
    return message


def _check_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))}
    return subprocess.run([sys.executable, "-m", "notifier", "check-config", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False, env={**environ, "NOTIFY_BACKEND": "console", **env})  # fmt: skip


# -- 6b: the failing template and the real error are named ---------------------------------------


def test_a_subject_that_overflows_names_the_rule_and_the_real_error():
    rule = Rule("big", Conditions(), Delivery(RECIPIENTS, subject=OVERFLOW))
    with pytest.raises(TemplateError) as caught:
        Renderer(rules=[rule])
    assert "rule 'big': subject: OverflowError: int too large to convert to float" in str(caught.value)
    assert "CSS" not in str(caught.value)


@pytest.mark.parametrize("part", ["subject.txt", "body.txt", "body.html"])
def test_each_template_file_is_named_when_it_fails(tmp_path, part):
    with pytest.raises(TemplateError, match=rf"^templates/finalize/{part}: OverflowError: ") as caught:
        Renderer(_templates_dir(tmp_path, {f"finalize/{part}": OVERFLOW}))
    assert "CSS" not in str(caught.value)


def test_check_config_names_the_rule_whose_subject_fails(tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text(f"{HEADER}[[rules]]\nname = 'big'\nsubject = '{OVERFLOW}'\n", encoding="utf-8")
    result = _check_config(str(rules))
    assert result.returncode == 1
    assert "rule 'big': subject: OverflowError" in result.stderr
    assert "Traceback" not in result.stderr and "CSS" not in result.stderr


# -- 6c: rendering is bounded in time and size ----------------------------------------------------

COSTLY = {
    "nested loops": (SPIN, "took more than 0.2 s"),
    "loops without a call": (
        "{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
        "took more than 0.2 s",
    ),
    "a huge string": ('{{ "x" * 1000000000 }}', "'*' would make about 1,000,000,000"),
    "a huge number": ("{{ 10 ** 10000000 }}", "would make a number of about"),
    "huge output": ('{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}', "more than 1,000,000 characters"),
    "a huge width": ('{{ "x"|center(1000000000) }}', "width or count of 1,000,000,000"),
    "a huge format": ('{{ "%1000000000s"|format("x") }}', "adding up to 1,000,000,000"),
    "a huge str.format": ('{{ "{:>1000000000}".format("x") }}', "adding up to 1,000,000,000"),
    "replace that explodes": (
        '{{ ("x" * 1000)|replace("x", "y" * 1000)|replace("y", "z" * 1000) }}',
        "more than 1,000,000 characters",
    ),
}


@pytest.mark.parametrize("body", COSTLY.values(), ids=COSTLY.keys())
def test_a_costly_template_fails_the_start_up_quickly_with_the_file_named(tmp_path, short_budget, body):
    text, reason = body
    message = _start_up_error(tmp_path, text)
    assert reason in message
    assert "(checked with a sample finalize event)" in message


def test_a_template_that_spins_on_a_real_event_fails_that_email_not_the_instance(tmp_path, short_budget):
    slow = '{% if event.name == "slow.csv" %}' + SPIN + "{% endif %}ok"
    renderer = Renderer(_templates_dir(tmp_path, {"finalize/body.txt": slow}))  # the sample event passes
    rule = Rule("r", Conditions(), Delivery(RECIPIENTS))
    event = decode(storage_cloud_event(name="slow.csv"))

    with pytest.raises(TemplateError, match=r"rule .r., templates/finalize/body\.txt: rendering took more than 0\.2 s"):
        renderer.render(Notification(notification_id(event, rule), event, rule))

    fast = decode(storage_cloud_event(name="fast.csv"))
    assert renderer.render(Notification(notification_id(fast, rule), fast, rule)).text == "ok\n"


def test_loops_still_behave_as_jinjas(tmp_path):
    text = (
        "{% for k, v in metadata|dictsort %}{{ loop.index }}/{{ loop.length }}:{{ k }}={{ v }}"
        "{% if not loop.last %},{% endif %}{% else %}none{% endfor %}"
        "|{% for i in range(3) recursive %}{{ i }}{% endfor %}"
        "|{% for i in range(5) if i is odd %}{{ i }}{% endfor %}"
        "|{{ 2 ** 10 }} {{ 3 * 4 }} {{ 'ab' * 3 }} {{ '%05.1f'|format(2.5) }} {{ '%s-%s' % ('a', 'b') }}"
    )
    renderer = Renderer(_templates_dir(tmp_path, {"finalize/body.txt": text}))
    rule = Rule("r", Conditions(), Delivery(RECIPIENTS))
    event = decode(storage_cloud_event(metadata={"b": "2", "a": "1"}))
    message = renderer.render(Notification(notification_id(event, rule), event, rule))
    assert message.text == "1/2:a=1,2/2:b=2|012|13|1024 12 ababab 002.5 a-b\n"


# -- start-up failures through the real function --------------------------------------------------


def test_a_spinning_template_stops_the_function_with_the_file_named(function_server_factory, tmp_path):
    folder = _templates_dir(tmp_path, {"finalize/body.html": SPIN})
    with pytest.raises(OSError, match="exited") as caught:
        function_server_factory(NOTIFY_BACKEND="outbox", NOTIFY_TEMPLATES_DIR=str(folder))
    output = str(caught.value)
    assert "storage-notifier cannot start: templates/finalize/body.html: rendering took more than" in output
    assert '"severity": "CRITICAL"' in output


def test_a_deeply_nested_rules_file_stops_the_function_with_a_cannot_start_line(function_server_factory, tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text(HEADER + "a = " + "[" * 10_000 + "]" * 10_000 + "\n", encoding="utf-8")
    with pytest.raises(OSError, match="exited") as caught:
        function_server_factory(NOTIFY_BACKEND="outbox", NOTIFY_CONFIG=str(rules))
    output = str(caught.value)
    assert "storage-notifier cannot start" in output
    assert "notify.toml: nested too deeply" in output
    assert "RecursionError" not in output


# -- 10: the rules file ---------------------------------------------------------------------------


def test_a_byte_order_mark_is_accepted(tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_bytes(b"\xef\xbb\xbf" + (HEADER + "[[rules]]\nname = 'all'\n").encode())
    result = _check_config(str(rules))
    assert result.returncode == 0, result.stderr
    assert "OK, 1 rule(s)" in result.stdout


def test_deep_nesting_is_a_problem_not_a_crash(tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text(HEADER + "a = " + "[" * 10_000 + "]" * 10_000 + "\n", encoding="utf-8")
    result = _check_config(str(rules))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith("notify.toml: nested too deeply")
    assert "recursion" not in result.stderr


def test_a_deeply_nested_subject_is_a_problem(tmp_path, capsys):
    rules = tmp_path / "notify.toml"
    subject = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    rules.write_text(f"{HEADER}[[rules]]\nname = 'deep'\nsubject = '{subject}'\n", encoding="utf-8")
    assert main(["check-config", str(rules)]) == 1
    err = capsys.readouterr().err
    assert "notify.toml: rules[0] (deep): subject: nested too deeply" in err


def test_a_rules_file_over_the_size_limit_is_refused(tmp_path, capsys):
    rules = tmp_path / "notify.toml"
    rules.write_text(HEADER + "#" * MAX_RULES_FILE_BYTES + "\n", encoding="utf-8")
    assert main(["check-config", str(rules)]) == 1
    err = capsys.readouterr().err
    assert f"notify.toml: larger than {MAX_RULES_FILE_BYTES:,} bytes (1 MiB)" in err


def _many_rules(count: int, extra: str = "") -> str:
    return HEADER + "".join(f"[[rules]]\nname = 'r{i}'\ninclude = 'team{i}/**'\n{extra}" for i in range(count))


def test_too_many_rules_are_refused_with_the_limit_named(tmp_path, capsys):
    rules = tmp_path / "notify.toml"
    rules.write_text(_many_rules(MAX_RULES + 1), encoding="utf-8")
    assert main(["check-config", str(rules)]) == 1
    err = capsys.readouterr().err
    assert f"notify.toml: rules: {MAX_RULES + 1:,} rules, more than the {MAX_RULES:,} allowed" in err


def test_the_most_rules_allowed_compile_each_distinct_subject_once(tmp_path, capsys, monkeypatch):
    rules = tmp_path / "notify.toml"
    rules.write_text(_many_rules(MAX_RULES, extra="subject = 'New: {{ object.name }}'\n"), encoding="utf-8")
    compiled = []
    original = jinja2.Environment.from_string

    def spy(self, source, *args, **kwargs):
        compiled.append(source)
        return original(self, source, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "from_string", spy)
    assert main(["check-config", str(rules)]) == 0
    assert f"OK, {MAX_RULES} rule(s)" in capsys.readouterr().out
    assert compiled == ["New: {{ object.name }}"]


# -- 10: preview and emit -------------------------------------------------------------------------


def test_preview_keeps_rules_with_dotted_names_apart(tmp_path, monkeypatch, capsys):
    rules = tmp_path / "notify.toml"
    rules.write_text(HEADER + "[[rules]]\nname = 'team.alpha'\n[[rules]]\nname = 'team.beta'\n", encoding="utf-8")
    monkeypatch.setenv("NOTIFY_CONFIG", str(rules))
    out = tmp_path / "preview"

    assert main(["preview", "finalize", "gs://acme/x.csv", "--out", str(out)]) == 0

    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 6, files
    for name in ("team.alpha", "team.beta"):
        assert sorted(f.rsplit(".", 1)[1] for f in files if f"-{name}-" in f) == ["eml", "html", "txt"]
    printed = capsys.readouterr().out
    assert all(str(path) in printed for path in out.iterdir())
    assert len({p.read_text() for p in out.glob("*.eml")}) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://x\r\nHost: y",
        "http://127.0.0.1:9/a b",
        "http://",
        "ftp://example.com/",
        "http://x\ty/",
        "http://x:port/",
        "http://①②⑦.0.0.1:18081/",
    ],
)
def test_emit_refuses_a_bad_url_with_a_message_naming_it(url):
    result = subprocess.run([sys.executable, "-m", "notifier", "emit", "finalize", "gs://b/o", "--url", url],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --url: "), result.stderr


def test_a_template_nested_too_deeply_to_compile_is_named(tmp_path):
    deep = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    with pytest.raises(TemplateError, match=r"^finalize/body\.html: cannot compile: RecursionError"):
        Renderer(_templates_dir(tmp_path, {"finalize/body.html": deep}))


# -- 6c, again: a single filter that runs long, and text made from a huge container -----------------

BIG_LIST = "{% set l = range(99999)|list %}"
SLOW_FILTERS = {
    "select in": (BIG_LIST + '{{ l|select("in", l)|list|length }}', "took more than 0.2 s"),
    "reject in": (BIG_LIST + '{{ l|reject("in", l)|list|length }}', "took more than 0.2 s"),
    "map in a loop": (BIG_LIST + '{{ l|map("int")|select("in", l)|list|length }}', "took more than 0.2 s"),
    "sum of lists": ("{{ range(30000)|batch(1)|sum(start=[])|length }}", "took more than 0.2 s"),
    "lipsum": ("{{ lipsum(300000)|length }}", "lipsum: 300,000 paragraphs"),
    "wordwrap": ('{{ ("a" * 999999)|wordwrap(1)|length }}', "wordwrap: "),
}


@pytest.mark.parametrize("body", SLOW_FILTERS.values(), ids=SLOW_FILTERS.keys())
def test_a_slow_filter_fails_the_start_up_quickly_with_the_file_named(tmp_path, short_budget, body):
    text, reason = body
    assert reason in _start_up_error(tmp_path, text)


def test_check_config_stops_a_subject_that_spins_inside_one_filter(tmp_path):
    rules = tmp_path / "notify.toml"
    subject = BIG_LIST + '{{ l|select("in", l)|list|length }}'
    rules.write_text(f"{HEADER}[[rules]]\nname = 'slow'\nsubject = '{subject}'\n", encoding="utf-8")
    started = time.monotonic()
    result = _check_config(str(rules))
    assert result.returncode == 1
    assert "rule 'slow': subject: rendering took more than 1 s" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60, "not stuck"


def _spin(value):
    while True:  # a filter that never returns to the template: only the alarm can stop it
        value += 1


def test_at_start_up_an_alarm_stops_a_filter_that_never_returns(short_budget):
    env = jinja_sandbox.Sandbox()
    env.filters["spin"] = _spin
    started = time.monotonic()
    with pytest.raises(jinja_sandbox.RenderLimitError, match=r"took more than 0\.2 s"):
        jinja_sandbox.render_within_budget(env.from_string("{{ n|spin }}"), {"n": 1}, alarm=True)
    assert time.monotonic() - started < 30, "not stuck"


def test_the_alarm_gives_back_the_handler_and_timer_it_found(short_budget):
    import signal

    def theirs(signum, frame):  # pragma: no cover - never fires: the test cancels it
        raise AssertionError("their alarm fired")

    previous = signal.signal(signal.SIGALRM, theirs)
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        env = jinja_sandbox.Sandbox()
        assert jinja_sandbox.render_within_budget(env.from_string("{{ 1 + 1 }}"), {}, alarm=True) == "2"
        assert signal.getsignal(signal.SIGALRM) is theirs
        assert 90 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_slow_filter_on_a_real_event_fails_that_email_not_the_instance(tmp_path, short_budget):
    slow = '{% if event.name == "slow.csv" %}' + SLOW_FILTERS["select in"][0] + "{% endif %}ok"
    renderer = Renderer(_templates_dir(tmp_path, {"finalize/body.txt": slow}))
    rule = Rule("r", Conditions(), Delivery(RECIPIENTS))
    event = decode(storage_cloud_event(name="slow.csv"))
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"rule .r., templates/finalize/body\.txt: rendering took more than 0\.2 s"):
        renderer.render(Notification(notification_id(event, rule), event, rule))
    assert time.monotonic() - started < 30, "not stuck"


HUGE_TEXT = {
    "a * width": ('{{ "%*s" % (999999999, "") }}', "a width or precision taken from an argument"),
    "a * width, format filter": ('{{ "%*d"|format(999999999, 1) }}', "a width or precision taken from an argument"),
    "a * precision": ('{{ "%.*f" % (999999999, 1.0) }}', "a width or precision taken from an argument"),
    "a nested width": ('{{ "{:>{}}".format("", 999999999) }}', "a width or precision taken from an argument"),
    "a nested width by name": (
        '{{ "{:>{w}}".format("", w="999999999") }}',
        "a width or precision taken from an argument",
    ),
}
HUGE = '{% set s = "x" * 999999 %}{% set b = [s, s] %}'  # two references, about 2 MB printed
for _name, _text in {
    "printed": "{{ b }}",
    "in a list printed": "{{ [b] }}",
    "tojson": "{{ b|tojson }}",
    "string": "{{ b|string }}",
    "pprint": "{{ b|pprint }}",
    "upper": "{{ b|upper }}",
    "format filter": '{{ "%s"|format(b) }}',
    "% operator": '{{ "%s" % b }}',
    "% operator, a tuple": '{{ "%s" % (b,) }}',
    "str.format": '{{ "{}".format(b) }}',
    "~": '{{ "" ~ b }}',
    "join": "{{ [b]|join }}",
    "dict values": "{{ dict(k=b).values() }}",
}.items():
    HUGE_TEXT[f"a huge list, {_name}"] = (HUGE + _text, "more than 1,000,000 characters")
HUGE_TEXT["many copies of a list"] = ("{% set l = range(100000)|list %}{{ ([l] * 999999).count(l) }}", "'*' would make")
HUGE_TEXT["a written width repeated"] = ('{{ ("{0:>999999}" * 1000).format("") }}', "adding up to 999,999,000")


@pytest.mark.parametrize("body", HUGE_TEXT.values(), ids=HUGE_TEXT.keys())
def test_huge_text_is_refused_before_it_is_made(tmp_path, body):
    text, reason = body
    assert reason in _start_up_error(tmp_path, text)


def test_small_containers_and_widths_still_render(tmp_path):
    text = (
        "{{ [1, 'a'] }} {{ {'k': [1, 2]}|tojson }} {{ '%5d' % 42 }} {{ '{:>3}'.format('x') }}"
        " {{ ['a', 'b']|join(',') }} {{ (1, 2)|string }} {{ lipsum(1, html=False)|length > 0 }}"
        " {{ 'aa bb'|wordwrap(2) }} {{ [[1], [2]]|sum(start=[]) }} {{ [3, 1, 2]|select('odd')|list }}"
        " {{ [3, 1, 3]|unique|list }} {{ [3, 1]|sort }} {{ ['1', '2']|map('int')|sum }}"
    )
    renderer = Renderer(_templates_dir(tmp_path, {"finalize/body.txt": text}))
    rule = Rule("r", Conditions(), Delivery(RECIPIENTS))
    event = decode(storage_cloud_event())
    message = renderer.render(Notification(notification_id(event, rule), event, rule))
    assert message.text == "[1, 'a'] {\"k\": [1, 2]}    42   x a,b (1, 2) True aa\nbb [1, 2] [3, 1] [3, 1] [1, 3] 3\n"
