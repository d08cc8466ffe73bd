"""The baseline for benches/saml.rs: pysaml2 as a SAML 2.0 SP verifying one Response in a loop.

Reads one JSON object on stdin:
  sp_entity_id, acs                    the SP (as the gateway publishes it)
  sp_key, sp_cert                      the SP's PEM files
  idp_metadata                         path of the IdP metadata (the one the gateway trusts)
  saml_response                        the base64 SAMLResponse (the same one the gateway verifies)
  request_id                           the AuthnRequest ID it answers
  seconds                              how long to loop

Each iteration is the full `Saml2Client.parse_authn_request_response` (HTTP-POST binding, the
request outstanding, response and assertion signatures required, xmlsec1 as pysaml2's default
crypto backend). Prints one JSON object: count, seconds (wall), cpu_seconds (this process and
its finished children: pysaml2 runs the xmlsec1 binary per signature).
"""

import json
import os
import sys
import time

from saml2 import BINDING_HTTP_POST
from saml2.client import Saml2Client
from saml2.config import SPConfig


def main():
    req = json.load(sys.stdin)
    conf = SPConfig()
    conf.load(
        {
            "entityid": req["sp_entity_id"],
            "xmlsec_binary": req.get("xmlsec", "/usr/bin/xmlsec1"),
            "key_file": req["sp_key"],
            "cert_file": req["sp_cert"],
            "metadata": {"local": [req["idp_metadata"]]},
            "accepted_time_diff": 60,
            "service": {
                "sp": {
                    "endpoints": {"assertion_consumer_service": [(req["acs"], BINDING_HTTP_POST)]},
                    "want_response_signed": True,
                    "want_assertions_signed": True,
                    "allow_unsolicited": False,
                    "authn_requests_signed": True,
                }
            },
        }
    )
    client = Saml2Client(config=conf)
    outstanding = {req["request_id"]: "/"}
    response = req["saml_response"]
    expect = req.get("name_id")

    def once():
        r = client.parse_authn_request_response(response, BINDING_HTTP_POST, outstanding=outstanding)
        if r is None or r.assertion is None:
            raise SystemExit("pysaml2 did not verify the response")
        if expect is not None and r.name_id.text != expect:
            raise SystemExit(f"unexpected NameID {r.name_id.text!r}")

    once()  # warm-up, and proof that it verifies
    seconds = float(req["seconds"])
    t0 = time.monotonic()
    c0 = os.times()
    count = 0
    while time.monotonic() - t0 < seconds:
        once()
        count += 1
    elapsed = time.monotonic() - t0
    c1 = os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])
    json.dump({"count": count, "seconds": elapsed, "cpu_seconds": cpu}, sys.stdout)


if __name__ == "__main__":
    main()
