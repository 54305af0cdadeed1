#!/usr/bin/env bash
# tests/test-corpus.sh: fsevent-map on every image of the e2fsprogs test
# corpus (../shared/corpus/e2fsprogs, mostly deliberately corrupt
# filesystems).  For each image, with and without --summary, the tool
# must map it (exit 0) or refuse it with a message (exit 1): never crash,
# hang, report a sanitizer error or write to the image.  A mapping must
# be valid JSON Lines whose segments cover the image exactly, in order
# (tests/check-segments.py).
#
# One line per image: name, mapped/refused, warnings, seconds.  Every
# failing image is listed at the end.  CORPUS_ONLY=GLOB limits the run
# to the images whose corpus file name matches GLOB.
#
# Under a sanitizer build (scripts/sanitize) every run's stderr is also
# searched for AddressSanitizer, LeakSanitizer and UBSan reports.

source ./functions.sh

if [ ! -d "$corpus" ]; then
    echo "SKIP: $0: the e2fsprogs corpus is not there: $corpus" >&2
    exit 77
fi
requires python3 --version
requires gzip --version
requires bzip2 --help
requires tar --version
requires timeout --version
requires sha256sum --version
map="$top_builddir/tools/fsevent-map"
checker="$top_srcdir/tests/check-segments.py"
[ -x "$map" ] || fail "fsevent-map not built: $map"
[ -f "$checker" ] || fail "checker missing: $checker"

tmp="$(tmpdir)"
# Per-run limit: a run that takes longer has hung.
limit="${CORPUS_TIMEOUT:-60}"

failures=()
nmapped=0 nrefused=0 nfailed=0 nimages=0
t_start=$EPOCHREALTIME

# Seconds (with 2 decimals) since $1, an $EPOCHREALTIME value.
elapsed ()
{
    local now=$EPOCHREALTIME
    local us=$(( ${now/./} - ${1/./} ))
    printf '%d.%02d' $(( us / 1000000 )) $(( us % 1000000 / 10000 ))
}

# decompress FILE DIR NAME: the image(s) in corpus file FILE, written
# to DIR: DIR/NAME, or for a tarball every file it holds (some hold a
# filesystem and its external journal).
decompress ()
{
    local file="$1" dir="$2" name="$3"
    case "$file" in
        *.tar.bz2) tar -xjf "$file" -C "$dir" --no-same-owner ;;
        *.bz2) bzip2 -dc "$file" > "$dir/$name" ;;
        *.gz)  gzip -dc "$file" > "$dir/$name" ;;
        *)     cp "$file" "$dir/$name" ;;
    esac
}

# run_map IMG OUT ERR [options]: run fsevent-map, print its status.
run_map ()
{
    local img="$1" out="$2" err="$3" rc=0
    shift 3
    timeout -k 5 "$limit" "$map" "$@" "$img" > "$out" 2> "$err" || rc=$?
    echo "$rc"
}

# check_run WHAT IMG RC OUT ERR: problems with one run, one per line.
check_run ()
{
    local what="$1" img="$2" rc="$3" out="$4" err="$5"
    case "$rc" in
        0|1) ;;
        124|137) echo "$what: hung (killed after ${limit}s, status $rc)" ;;
        *) if [ "$rc" -gt 128 ]; then
               echo "$what: died (status $rc: signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128))))"
           else
               echo "$what: exit status $rc (expected 0 or 1)"
           fi ;;
    esac
    local sanitizer=no
    if grep -Eq 'AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer' "$err"; then
        sanitizer=yes
        echo "$what: sanitizer report:"
        grep -E -A12 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$err" |
            head -40 | sed 's/^/    /'
    fi
    if [ "$rc" = 1 ]; then
        # The last line is the reason: "fsevent-map: IMAGE: something".
        local last
        last="$(grep -v '^fsevent-map: warning: ' "$err" | tail -1)"
        case "$last" in
            "fsevent-map: $img: "?*) ;;
            *) echo "$what: refused without a clear message; stderr ends: $(tail -1 "$err")" ;;
        esac
        [ ! -s "$out" ] || echo "$what: refused, yet printed on stdout"
    fi
    # Anything else on stderr must be a warning (or the refusal above).
    local other
    other="$(grep -v -e '^fsevent-map: warning: ' -e "^fsevent-map: $img: " "$err" | head -3)"
    if [ -n "$other" ] && [ $sanitizer = no ] && { [ "$rc" = 0 ] || [ "$rc" = 1 ]; }; then
        echo "$what: unexpected stderr: $other"
    fi
    return 0
}

# check_image NAME IMG: run both ways on IMG, print its line, count it.
check_image ()
{
    local name="$1" img="$2" t0=$EPOCHREALTIME
    local rc="" src="" problems="" warnings="-" out size sum_before result

    nimages=$((nimages + 1))
    size="$(stat -c %s "$img")"
    sum_before="$(sha256sum < "$img")"
    rc="$(run_map "$img" "$tmp/out" "$tmp/err")"
    src="$(run_map "$img" "$tmp/sout" "$tmp/serr" --summary)"
    problems="$(check_run map "$img" "$rc" "$tmp/out" "$tmp/err"
                check_run map--summary "$img" "$src" "$tmp/sout" "$tmp/serr")"
    if [ "$rc" != "$src" ]; then
        problems+=$'\n'"exit status $rc, but $src with --summary"
    fi
    if [ "$rc" = 0 ] && [ "$src" = 0 ]; then
        if out="$(python3 "$checker" "$size" "$tmp/out" "$tmp/sout")"; then
            warnings="$out"
        else
            problems+=$'\n'"bad output:"$'\n'"$(sed 's/^/    /' <<<"$out")"
        fi
    fi
    if [ "$(sha256sum < "$img")" != "$sum_before" ]; then
        problems+=$'\n'"the image changed (sha256)"
    fi
    problems="$(sed '/^$/d' <<<"$problems")"

    case "$rc" in
        0) result=mapped ;;
        1) result=refused ;;
        *) result="status-$rc" ;;
    esac
    if [ -n "$problems" ]; then
        result="FAILED:$result"
        nfailed=$((nfailed + 1))
        failures+=("$name")
    elif [ "$rc" = 0 ]; then
        nmapped=$((nmapped + 1))
    else
        nrefused=$((nrefused + 1))
    fi
    printf '%-50s %-15s warnings=%-4s %6ss\n' "$name" "$result" "$warnings" \
           "$(elapsed "$t0")"
    [ "$rc" != 1 ] || echo "  $(tail -1 "$tmp/err")"
    [ -z "$problems" ] || sed 's/^/  /' <<<"$problems"
    rm -f "$tmp/out" "$tmp/err" "$tmp/sout" "$tmp/serr"
}

shopt -s nullglob
for file in "$corpus"/*; do
    base="${file##*/}"
    [ -f "$file" ] && [ "$base" != README.md ] || continue
    if [ -n "${CORPUS_ONLY:-}" ]; then
        # shellcheck disable=SC2053
        [[ $base == $CORPUS_ONLY ]] || continue
    fi
    name="$base"
    for suffix in .tar.bz2 .bz2 .gz; do
        name="${name%"$suffix"}"
    done
    # One image at a time in $tmp/img, so that the disk holds only one.
    rm -rf "$tmp/img"
    mkdir "$tmp/img"
    if ! decompress "$file" "$tmp/img" "$name"; then
        echo "$name: FAILED: cannot decompress $base"
        nimages=$((nimages + 1)) nfailed=$((nfailed + 1))
        failures+=("$name")
        continue
    fi
    mapfile -t imgs < <(find "$tmp/img" -type f | LC_ALL=C sort)
    [ ${#imgs[@]} -gt 0 ] || {
        echo "$name: FAILED: $base holds no file"
        nimages=$((nimages + 1)) nfailed=$((nfailed + 1))
        failures+=("$name")
        continue
    }
    for img in "${imgs[@]}"; do
        if [ "${img##*/}" = "$name" ]; then
            check_image "$name" "$img"
        else                    # a file inside a tarball
            check_image "$name/${img#"$tmp/img/"}" "$img"
        fi
    done
done
rm -rf "$tmp/img"

echo "images: $nimages, mapped: $nmapped, refused: $nrefused, failed: $nfailed; $(elapsed "$t_start")s"
[ "$nimages" -gt 0 ] || fail "no image in $corpus${CORPUS_ONLY:+ matching '$CORPUS_ONLY'}"
if [ "$nfailed" -gt 0 ]; then
    fail "$nfailed image(s) failed: ${failures[*]}"
fi
