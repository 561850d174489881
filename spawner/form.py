"""The Colab-like "Change runtime type" form, rendered from the runtime catalog."""

from __future__ import annotations

from html import escape

from kernelhub.runtimes.types import RuntimeCatalogView


def render_runtime_form(view: RuntimeCatalogView, selected: str) -> str:
    """HTML for the options form: one radio button per runtime type.

    A type the user cannot start now is shown disabled with its reason rather
    than hidden, so people learn why the GPU option is grey.
    """
    available = [rt.name for rt, av in view.entries if av.available]
    if selected not in available and available:
        selected = available[0]
    rows = []
    for runtime_type, availability in view.entries:
        input_id = f"runtime-{escape(runtime_type.name)}"
        attributes = [
            'type="radio"',
            'name="runtime"',
            f'id="{input_id}"',
            f'value="{escape(runtime_type.name)}"',
            'class="form-check-input"',
        ]
        if not availability.available:
            attributes.append("disabled")
        elif runtime_type.name == selected:
            attributes.append("checked")
        limits = limits_text(runtime_type.mem_limit, runtime_type.cpu_limit, runtime_type.gpus)
        reason = (
            f'<div class="kh-unavailable text-danger small">Unavailable: '
            f"{escape(availability.reason)}</div>"
            if not availability.available
            else ""
        )
        rows.append(
            f'<div class="form-check kh-runtime mb-3" data-runtime="{escape(runtime_type.name)}">'
            f"<input {' '.join(attributes)}>"
            f'<label class="form-check-label" for="{input_id}">'
            f"<strong>{escape(runtime_type.display_name)}</strong></label>"
            f'<div class="text-muted small">{escape(runtime_type.description)}</div>'
            f'<div class="small">{escape(limits)}</div>'
            f"{reason}</div>"
        )
    return (
        '<fieldset class="kh-runtime-form">'
        "<legend>Hardware accelerator</legend>" + "".join(rows) + "</fieldset>"
    )


def limits_text(mem_limit: str | None, cpu_limit: float | None, gpus: int) -> str:
    parts = []
    if cpu_limit:
        parts.append(f"{cpu_limit:g} CPU core(s)")
    if mem_limit:
        parts.append(f"{mem_limit} memory")
    parts.append(f"{gpus} GPU(s)" if gpus else "no GPU")
    return ", ".join(parts)
