#!/bin/sh
# A simple startup task: must exit 0 before the role starts. Writes what it was given.
set -e
echo "prepared $INSTANCE_ID for '$TITLE' at $(date -u +%FT%TZ)" > "$SCRATCH/prepared.txt"
