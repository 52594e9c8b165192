#!/bin/sh
# re-pin this rank by its host index (hostname ends in h<i>): core = (i >> SHIFT) & 1
i=$(hostname | sed 's/.*h//')
core=$(( (i >> SHIFT) & 1 ))
exec taskset -c $core "$@"
