"""The "prometheus" source's options and failure modes (the live path is in
test_prometheus_integration.py, against a real Prometheus)."""

from __future__ import annotations

import ssl
import time
from datetime import UTC, datetime

import pytest

from collectors.base import build_source
from collectors.options import OptionsError
from collectors.prometheus_source import PrometheusOptions, PrometheusSource
from tests.services.prometheus import free_port


def test_connection_options_reach_the_client():
    src = build_source(
        "prometheus",
        {
            "url": "https://prom.example:9090",
            "headers": {"Authorization": "Bearer t0k"},
            "basic_auth_user": "fleet",
            "basic_auth_password": "pw",
            "tls_verify": False,
            "timeout_s": 3.0,
            "interval_s": 5.0,
        },
        "fleet.toml [[sources]] #2 (prometheus)",
    )
    assert isinstance(src, PrometheusSource)
    c = src.client
    assert c.url == "https://prom.example:9090" and c.headers == {"Authorization": "Bearer t0k"}
    assert c.auth == ("fleet", "pw") and c.tls_verify is False and c.timeout_s == 3.0
    assert c._ssl is not None and c._ssl.verify_mode == ssl.CERT_NONE
    # an explicit Authorization header wins over basic auth
    assert c._sent_headers["Authorization"] == "Bearer t0k"
    assert src.window_s == 10.0 and src.interval_s == 5.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"url": "prom:9090"}, r"url must be http\(s\)://\.\.\., got .prom:9090."),
        ({"interval": 5}, "unknown key 'interval'"),
        ({"backfill_s": -1}, "key 'backfill_s' must be >= 0, got -1.0"),
        ({"headers": "Bearer x"}, "key 'headers' must be dict"),
    ],
)
def test_bad_options_are_one_clear_error(raw, message):
    with pytest.raises(OptionsError, match=message):
        build_source("prometheus", raw, "fleet.toml [[sources]] #2")


async def test_unreachable_prometheus_fails_fast_with_one_line():
    src = PrometheusSource(
        PrometheusOptions(url=f"http://127.0.0.1:{free_port()}", timeout_s=2.0, backfill_s=0)
    )
    t = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        await src.gather(datetime.now(UTC))
    assert time.monotonic() - t < 5
    assert "\n" not in str(info.value) and "query {__name__=~" in str(info.value)
    await src.close()
