"""Specification of the "Change runtime type" form rendered from a catalog view."""

from html.parser import HTMLParser

import pytest

from kernelhub.runtimes.types import Availability, RuntimeCatalogView, RuntimeType
from kernelhub.spawner.form import render_runtime_form

CPU = RuntimeType("cpu", "None (CPU)", "CPU only.", mem_limit="4G", cpu_limit=2.0)
GPU = RuntimeType("gpu", "GPU", "One NVIDIA GPU.", mem_limit="16G", cpu_limit=4.0, gpus=1)
TPU = RuntimeType("tpu", "TPU", "Not here.", gpus=0)
FREE = Availability(True)
BUSY = Availability(False, "all GPUs are in use (1 of 1 taken); try again later")


class FormParser(HTMLParser):
    """Collects the radio inputs and the visible text of the rendered form."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "input":
            attributes = dict(attrs)
            self.inputs[attributes["value"]] = attributes

    def handle_data(self, data):
        self.text.append(data)

    def checked(self) -> list[str]:
        return [value for value, attrs in self.inputs.items() if "checked" in attrs]

    def disabled(self) -> list[str]:
        return [value for value, attrs in self.inputs.items() if "disabled" in attrs]


def render(entries, selected="cpu") -> FormParser:
    return FormParser(render_runtime_form(RuntimeCatalogView(entries), selected))


def test_every_runtime_type_is_a_radio_button_of_the_runtime_field():
    form = render([(CPU, FREE), (GPU, FREE)])
    assert list(form.inputs) == ["cpu", "gpu"]
    for value, attrs in form.inputs.items():
        assert (attrs["type"], attrs["name"], attrs["id"]) == (
            "radio",
            "runtime",
            f"runtime-{value}",
        )


def test_each_type_shows_its_name_description_and_limits():
    text = "".join(render([(CPU, FREE), (GPU, FREE)]).text)
    assert "Hardware accelerator" in text
    assert "None (CPU)CPU only.2 CPU core(s), 4G memory, no GPU" in text
    assert "GPUOne NVIDIA GPU.4 CPU core(s), 16G memory, 1 GPU(s)" in text


@pytest.mark.parametrize(
    ("entries", "selected", "checked"),
    [
        ([(CPU, FREE), (GPU, FREE)], "gpu", ["gpu"]),
        ([(CPU, FREE), (GPU, FREE)], "cpu", ["cpu"]),
        ([(CPU, FREE), (GPU, BUSY)], "gpu", ["cpu"]),
        ([(GPU, BUSY), (TPU, FREE), (CPU, FREE)], "gpu", ["tpu"]),
        ([(CPU, FREE), (GPU, FREE)], "no-such-type", ["cpu"]),
        ([(CPU, BUSY), (GPU, BUSY)], "gpu", []),
    ],
    ids=[
        "selected-gpu",
        "selected-cpu",
        "selected-disabled-falls-back-to-first-available",
        "fallback-passes-over-disabled-types",
        "unknown-selection-falls-back",
        "nothing-available-nothing-checked",
    ],
)
def test_exactly_one_available_type_is_checked(entries, selected, checked):
    form = render(entries, selected)
    assert form.checked() == checked
    assert not set(form.checked()) & set(form.disabled())


def test_an_unavailable_type_is_disabled_with_its_reason_not_hidden():
    form = render([(CPU, FREE), (GPU, BUSY)], "gpu")
    assert form.disabled() == ["gpu"]
    assert "checked" not in form.inputs["gpu"]
    assert "Unavailable: all GPUs are in use (1 of 1 taken); try again later" in form.text


def test_available_types_show_no_reason():
    assert not any("Unavailable" in text for text in render([(CPU, FREE), (GPU, FREE)]).text)


@pytest.mark.parametrize(
    ("runtime_type", "availability", "raw", "escaped"),
    [
        (RuntimeType("cpu", "<b>CPU</b>"), FREE, "<b>CPU</b>", "&lt;b&gt;CPU&lt;/b&gt;"),
        (RuntimeType("cpu", "CPU", "<script>x()</script>"), FREE, "<script>", "&lt;script&gt;"),
        (RuntimeType("cpu", "CPU", "R&D"), FREE, "R&D", "R&amp;D"),
        (RuntimeType('a"b', "CPU"), FREE, 'value="a"b"', 'value="a&quot;b"'),
        (RuntimeType("gpu", "GPU"), Availability(False, "<i>x</i>"), "<i>", "&lt;i&gt;"),
        (RuntimeType("big", "Big", mem_limit="<4G>"), FREE, "<4G>", "&lt;4G&gt;"),
    ],
    ids=["display-name", "description", "ampersand", "name-in-attribute", "reason", "limits"],
)
def test_text_from_configuration_is_html_escaped(runtime_type, availability, raw, escaped):
    html = render_runtime_form(RuntimeCatalogView([(runtime_type, availability)]), "cpu")
    assert raw not in html
    assert escaped in html


def test_escaped_text_reads_back_unchanged():
    hostile = RuntimeType("cpu", 'Fast & "cheap" <CPU>', "a < b > c")
    form = render([(hostile, FREE)])
    assert 'Fast & "cheap" <CPU>' in form.text
    assert "a < b > c" in form.text
