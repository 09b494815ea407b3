#!/bin/sh
# A background startup task: runs beside the role for as long as the VM does.
while true; do
  date -u +%FT%TZ > "$SCRATCH/ticker.txt" 2>/dev/null || true
  sleep 5
done
