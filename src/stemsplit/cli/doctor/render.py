"""The ``stemsplit doctor`` report as plain-text sections of ``(label, value)`` rows, for people."""

from __future__ import annotations

from stemsplit.cli.doctor.report import DoctorReport, PackageInfo

# --- plain-text summary --------------------------------------------------------------------------


def size_text(n: int | None) -> str:
    """A byte count for people: ``80.2 MB`` (decimal units), ``unknown`` for None."""
    if n is None:
        return "unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def summary(r: DoctorReport) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """The report as sections (title, rows of ``(label, value)``), in the order they are shown."""

    def package(p: PackageInfo) -> str:
        text = (p.version or "not installed") + (f" ({p.detail})" if p.detail else "")
        return text + (f", import fails: {p.error}" if p.error else "")

    versions = [
        ("stemsplit", r.stemsplit),
        ("python", f"{r.python} ({r.python_implementation}) {r.executable}"),
    ]
    versions += [("platform", r.platform)]
    versions += [(p.name, package(p)) for p in r.packages]

    device: list[tuple[str, str]] = []
    if r.device is not None:
        device += [("auto", f"{r.device.device}, {r.device.precision}"), ("why", r.device.why)]
        device += [("CPU backend", f"{r.device.cpu_backend} ({r.device.cpu_backend_why})")]
        if r.device.compute is not None:
            device += [("CUDA batches", r.device.compute)]
    if r.torch is not None:
        t = r.torch
        build = {"cpu": "CPU only", "cuda": f"CUDA {t.cuda_version}", "rocm": f"ROCm {t.hip_version}"}[
            t.build
        ]
        device += [("torch build", build), ("CUDA usable", _yes(t.cuda_available))]
        device += [
            (f"cuda:{g.index}", f"{g.name}, {g.memory_bytes / 2**30:.0f} GiB, sm {g.capability}")
            for g in t.gpus
        ]
        device += [("MPS", f"built {_yes(t.mps_built)}, available {_yes(t.mps_available)}")]
        device += [
            (
                "CPU",
                f"{t.threads} threads of {t.cpu_count} cores, flags {', '.join(t.cpu_flags) or 'none of note'}",
            )
        ]
    else:
        device += [("torch", "unavailable")]
    if r.nvidia.detected:
        driver = f"driver {r.nvidia.driver_version or '?'}, CUDA {r.nvidia.cuda_version or '?'}"
        device += [("NVIDIA", f"{driver} ({r.nvidia.evidence})")]

    decoders = []
    for d in r.decoders:
        if not d.available:
            decoders.append((d.name, f"unavailable ({d.error})"))
            continue
        can = [name.replace("_", " ") for name, ok in d.capabilities if ok]
        cannot = [name.replace("_", " ") for name, ok in d.capabilities if not ok]
        checks = f"; can: {', '.join(can)}" + (f"; CANNOT: {', '.join(cannot)}" if cannot else "")
        decoders.append((d.name, f"{d.version}: reads {', '.join(d.formats)}{checks}"))

    c = r.cache
    cache = [("path", str(c.checkpoints)), ("writable", _yes(c.writable)), ("free", size_text(c.free_bytes))]

    models = []
    for m in r.models:
        if not m.cached:
            state = "not cached" if not any(f.cached for f in m.files) else "partly cached"
        elif not m.valid:
            state = "CORRUPT"
        else:
            state = "cached, verified" if r.verified else "cached (not re-hashed)"
        models.append((m.name + (" (default)" if m.default else ""), state))

    n = r.network
    network = [("offline", _yes(n.offline)), ("mirror", n.mirror or "-")]
    network += [(name, value) for name, value in n.proxies]
    if n.ca_bundle_var:
        network += [(n.ca_bundle_var, f"{n.ca_bundle}{'' if n.ca_bundle_exists else ' (missing)'}")]

    return (
        ("Versions", tuple(versions)),
        ("Device", tuple(device)),
        ("Decoders", tuple(decoders)),
        ("Cache", tuple(cache)),
        ("Models", tuple(models)),
        ("Network", tuple(network)),
    )
