#!/bin/sh
# Copies the committed corpus of each named target (default: all) into fuzz/corpus/<target>,
# the working corpus libFuzzer grows, leaving out the known findings of tests/fuzz/pending.txt
# (they would stop the run at once). Run from the repository root.
set -eu
targets=${*:-saml_response slo_redirect scim_filter scim_patch config_loader forwarded_request proxy_headers logout_token account_api_decode webhook_payload scim_resource return_to client_ip}
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    for f in tests/fuzz/corpus/"$t"/*; do
        name=$(basename "$f")
        if grep -qx "$t/$name" tests/fuzz/pending.txt; then
            echo "skipped (pending): $t/$name"
            continue
        fi
        cp "$f" "fuzz/corpus/$t/$name"
    done
done
