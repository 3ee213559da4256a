"""The deploy and container checks of .ci/, run through .ci/deploy_checks.py.

Layout:
  common.py      paths, YAML loading, the exporter's metric contract, exposition parsing, HTTP helpers
  runner.py      Suite (ok/FAIL lines, the closing "N passed, M failed" line), subprocess and tool helpers
  prometheus.py  alert/recording rules, the PrometheusRule, metric references, the end-to-end scrape
  grafana.py     dashboard structure and queries
  kubernetes.py  manifests, cross-references, kustomize rendering of every overlay
  hostfiles.py   systemd unit, Dockerfiles, CI files (static)
  binary.py      the exporter binary: configs, reloads, the demo exposition
  image.py       the container image: stand-in base, build, run, hardening, SIGTERM
  suites.py      which checks run in which order
"""
