import json
import math
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from scheduler.architecture import DTYPES, MAX_CONFIG_BYTES, ConfigError, parse_config
from scheduler.catalog import efficiency_for, hardware_catalog
from scheduler.perf import Workload, estimate


def _rounded(value: float, digits: int = 2):
    return None if math.isnan(value) else round(value, digits)


class Command(BaseCommand):
    help = ("Estimate a model's latency and throughput on one hardware type (roofline model); prints one JSON "
            "object. Needs no database.")
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("--config", required=True, help="Path to the model's Hugging Face config.json ('-' for stdin).")
        parser.add_argument("--hardware", required=True, help=f"One of: {', '.join(sorted(hardware_catalog()))}.")
        parser.add_argument("--dtype", default="bf16", choices=DTYPES)
        parser.add_argument("--modality", default="text", choices=["text", "vision-language", "embedding"])
        parser.add_argument("--accelerators", type=int, help="Tensor-parallel degree (default: the smallest that fits).")
        parser.add_argument("--input-tokens", type=int, default=1024)
        parser.add_argument("--output-tokens", type=int, default=128)
        parser.add_argument("--concurrency", type=int, default=1)

    def handle(self, *args, **options):
        for name in ("input_tokens", "output_tokens", "concurrency"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        if options["accelerators"] is not None and options["accelerators"] < 1:
            raise CommandError("--accelerators must be at least 1")
        hardware = hardware_catalog().get(options["hardware"])
        if hardware is None:
            raise CommandError(f"unknown hardware {options['hardware']!r}; choose from "
                               f"{', '.join(sorted(hardware_catalog()))}")
        arch = self._architecture(options)
        result = estimate(arch, options["dtype"], hardware, efficiency_for(hardware),
                          Workload(options["input_tokens"], options["output_tokens"], options["concurrency"]),
                          accelerators=options["accelerators"])
        self.stdout.write(json.dumps({
            "hardware": result.hardware,
            "accelerators": result.accelerators,
            "dtype": result.dtype,
            "fits": result.fits,
            "reason": result.reason,
            "input_tokens": options["input_tokens"],
            "output_tokens": options["output_tokens"],
            "concurrency": result.concurrency,
            "ttft_ms": _rounded(result.ttft_ms),
            "tpot_ms": _rounded(result.tpot_ms),
            "output_tokens_per_s": _rounded(result.output_tokens_per_s, 1),
            "requests_per_s": _rounded(result.requests_per_s, 3),
            "max_concurrency": result.max_concurrency,
            "max_output_tokens_per_s": _rounded(result.max_output_tokens_per_s, 1),
            "weight_gb_per_accelerator": round(result.weight_bytes_per_accelerator / 1e9, 2),
            "kv_cache_mb_per_request": round(result.kv_bytes_per_request / 1e6, 2),
            "params_total": arch.total_params,
            "params_active": arch.active_params,
        }))

    def _architecture(self, options):
        try:
            return parse_config(self._read_config(options["config"]), modality=options["modality"])
        except ConfigError as error:
            raise CommandError(f"not a valid transformer config: {error}") from None

    @staticmethod
    def _read_config(path: str) -> dict:
        try:
            text = sys.stdin.read(MAX_CONFIG_BYTES + 1) if path == "-" else Path(path).read_text()
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        if len(text) > MAX_CONFIG_BYTES:
            raise CommandError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"{path} is not JSON: {error}") from None
