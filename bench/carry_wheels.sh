# Sourced by the GPU scripts: install wheels carried in $WHEEL_DIR (default .whl) into a private folder
# ($WHEEL_SITE, default /tmp/tf-site) and append it to PYTHONPATH, which Python searches before the
# machine's site-packages: carry only what is missing or too old there (never torch or triton;
# `make gpu-wheels` fetches the list). Usage: install_carried_wheels SCRIPT_NAME; returns 1 on failure.
install_carried_wheels() {
    local name="$1" wheels
    WHEEL_DIR="${WHEEL_DIR:-.whl}"
    WHEEL_SITE="${WHEEL_SITE:-/tmp/tf-site}"
    shopt -s nullglob
    wheels=("$WHEEL_DIR"/*.whl)
    shopt -u nullglob
    [ ${#wheels[@]} -gt 0 ] || return 0
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WHEEL_SITE" \
        "${wheels[@]}"; then
        export PYTHONPATH="$PYTHONPATH:$WHEEL_SITE"
        echo "$name: installed ${#wheels[@]} wheels from $WHEEL_DIR into $WHEEL_SITE"
    else
        echo "$name: installing the wheels in $WHEEL_DIR failed (see above); going on without them" >&2
        return 1
    fi
}
