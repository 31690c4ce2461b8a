"""Every built-in source module, imported once so it registers itself.

A new source is one module in collectors/ plus one line here.
"""

import collectors.mqtt_source  # noqa: F401  kind "mqtt"
import collectors.prometheus_source  # noqa: F401  kind "prometheus"
import collectors.scrape_source  # noqa: F401  kind "scrape"
import collectors.sim.source  # noqa: F401  kind "sim"
