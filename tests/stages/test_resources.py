"""Seconds and peak host memory per phase: what every fit records about its own cost.

The memory checks run in a fresh interpreter: in a long test session freed memory stays
mapped and is reused, so a new allocation need not raise the resident set.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from builders import REPO_ROOT

PHASES = textwrap.dedent("""
    import json, time
    import numpy as np
    from stages.resources import PhaseMonitor

    with PhaseMonitor(interval=0.01) as monitor:
        with monitor.phase("small"):
            time.sleep(0.05)
        with monitor.phase("large"):
            block = np.ones(300_000_000 // 8)          # 300 MB, touched
            time.sleep(0.05)
            del block
        with monitor.phase("small"):                   # entered again: its seconds add up
            time.sleep(0.05)
        with monitor.phase("fit"):
            with monitor.phase("train"):
                block = np.ones(200_000_000 // 8)
                time.sleep(0.03)
                del block
            running = monitor.record()
    print(json.dumps({"done": monitor.record(), "running": running}))
""")


def test_each_phase_gets_its_own_seconds_and_peak_memory():
    done = subprocess.run([sys.executable, "-c", PHASES], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    records = json.loads(done.stdout)
    record, running = records["done"], records["running"]
    assert list(record) == ["small", "large", "fit", "train"]
    assert record["small"]["seconds"] >= 0.1 and record["large"]["seconds"] >= 0.05
    assert record["large"]["peak_rss_gb"] - record["small"]["peak_rss_gb"] > 0.25
    assert "running" not in record["small"] and "running" not in record["fit"]
    # an open phase reports its time so far; an enclosing phase is charged its inner phases' peaks
    assert running["fit"]["running"] is True and running["fit"]["seconds"] > 0.02
    assert running["fit"]["peak_rss_gb"] >= running["train"]["peak_rss_gb"]


def test_tracked_counters_are_recorded_per_phase_as_their_increase():
    from stages.resources import PhaseMonitor

    count = [0.0]
    with PhaseMonitor(interval=1.0) as monitor:
        monitor.track("gb_read", lambda: count[0])
        for name, amount in (("first", 2.0), ("second", 0.5), ("first", 1.0)):
            with monitor.phase(name):
                count[0] += amount
    record = monitor.record()
    assert record["first"]["gb_read"] == 3.0 and record["second"]["gb_read"] == 0.5
