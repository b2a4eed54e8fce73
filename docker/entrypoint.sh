#!/bin/sh
# The image's entrypoint: the first argument names the process, the rest are its own options.
#   worker [celery worker options]   celery -A flowcraft_celery worker -l INFO ...
#   beat [celery beat options]       celery -A flowcraft_celery beat (schedule file in /tmp; run ONE)
#   flower [flower options]          celery -A flowcraft_celery flower on 0.0.0.0:5555
#   metrics [options]                flowcraft-celery metrics on 0.0.0.0:9808
#   celery ...                       any celery command as given
#   anything else                    a flowcraft-celery command: start, status, show, queues, ...
set -eu

role="${1:-worker}"
[ "$#" -gt 0 ] && shift

case "$role" in
  worker)
    exec celery -A flowcraft_celery worker -l "${CELERY_LOG_LEVEL:-INFO}" "$@" ;;
  beat)
    exec celery -A flowcraft_celery beat -l "${CELERY_LOG_LEVEL:-INFO}" \
      -s "${CELERY_BEAT_SCHEDULE:-/tmp/celerybeat-schedule}" "$@" ;;
  flower)
    exec celery -A flowcraft_celery flower --address=0.0.0.0 --port="${FLOWER_PORT:-5555}" "$@" ;;
  metrics)
    exec flowcraft-celery metrics --address 0.0.0.0 --port "${METRICS_PORT:-9808}" "$@" ;;
  celery)
    exec celery "$@" ;;
  *)
    exec flowcraft-celery "$role" "$@" ;;
esac
