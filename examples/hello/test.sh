#!/bin/sh
# A tiny test suite: add.sh must add two numbers.
set -e
. ./add.sh
for case in "1 2 3" "20 22 42" "-1 1 0"; do
	set -- $case
	got=$(add "$1" "$2")
	if [ "$got" != "$3" ]; then
		echo "FAIL add $1 $2 = $got, want $3"
		exit 1
	fi
	echo "ok   add $1 $2 = $got"
done
echo "all tests passed"
