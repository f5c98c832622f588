#!/usr/bin/env bash
# cluectl --version, and the bash completion script `cluectl completion bash` generates from
# the command table: it loads in bash, completes groups, commands and each command's own
# options, skips option values when finding the command, and completes files after --*-file.
set -euo pipefail
ctl=${CLUECTL_BIN:?}
fail=0
check() { # words... -- expected word (must be among the completions)
  local want=${!#} n=$(($# - 1))
  local -a words=("${@:1:$n}")
  local got
  got=$(COMP_WORDS=("${words[@]}") COMP_CWORD=$((${#words[@]} - 1)) bash -c '
    source "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _cluectl
    printf "%s\n" "${COMPREPLY[@]}"' _ "$script" "${words[@]}")
  if grep -qxF -- "$want" <<<"$got"; then
    echo "PASS ${words[*]} -> $want"
  else
    echo "FAIL ${words[*]}: wanted $want, got: $(echo $got)"
    fail=1
  fi
}
absent() { # words... -- a word that must not be offered
  local bad=${!#} n=$(($# - 1))
  local -a words=("${@:1:$n}")
  local got
  got=$(bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _cluectl
    printf "%s\n" "${COMPREPLY[@]}"' _ "$script" "${words[@]}")
  if grep -qxF -- "$bad" <<<"$got"; then echo "FAIL ${words[*]}: offered $bad"; fail=1; else echo "PASS ${words[*]} -/-> $bad"; fi
}

v=$("$ctl" --version)
[[ $v =~ ^cluectl\ [0-9]+\.[0-9]+\.[0-9]+$'\n'commit\ [0-9a-f]{7,}(-dirty)?$|^cluectl\ [0-9.]+$'\n'commit\ unknown$ ]] \
  || { echo "FAIL --version printed: $v"; fail=1; }
"$ctl" completion zsh >/dev/null 2>&1 && { echo "FAIL completion zsh accepted"; fail=1; }

script=$(mktemp /tmp/cluectl-completion.XXXXXX)
trap 'rm -f "$script" /tmp/cluectl-completion-file.txt' EXIT
"$ctl" completion bash >"$script"
bash -n "$script"
touch /tmp/cluectl-completion-file.txt

check cluectl st stats
check cluectl cl clue
check cluectl clue mo move
check cluectl clue move 17 --ver --version
check cluectl --server 127.0.0.1:1 clue mo move        # the option's value is not a command
check cluectl clue submit --ti --title
check cluectl stats --fr --from
check cluectl stats bul bulletin
check cluectl stats bulletin --mo --month
check cluectl admin create-u create-user
check cluectl --js --json                             # global options anywhere
check cluectl clue note 3 --text-file /tmp/cluectl-completion-f /tmp/cluectl-completion-file.txt
check cluectl completion b bash
absent cluectl clue mo submit
absent cluectl clue move 17 --ti --title              # submit's option, not move's
[ $fail -eq 0 ] && echo "all passed"
exit $fail
