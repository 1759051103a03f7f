"""Parses Prometheus text (stdin) with prometheus_client's own parser and prints every sample
as one JSON object, `name{k="v",...}` -> value, for tests/metrics.rs to compare."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[s.name + ("{" + labels + "}" if labels else "")] = s.value
json.dump(samples, sys.stdout)
