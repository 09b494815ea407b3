#!/bin/sh
# A foreground startup task: the role cannot shut down until it exits.
sleep 1
echo "warm" > "$SCRATCH/warmup.txt" 2>/dev/null || true
