"""Single logout messages for the integration tests, built and checked by pysaml2 (the IdP side).

Reads one JSON object on stdin, prints one JSON object:
  idp_entity_id, idp_key, idp_cert, sp_metadata     as for idp.py
  op: "request"    a LogoutRequest from the IdP to `destination`
        name_id, name_id_format, session_indexes, expire (ISO time or null), relay_state
        binding "redirect" -> {"url": ...} (signed query string unless sign=false)
        binding "post"     -> {"SAMLRequest": ..., "RelayState": ...} (enveloped signature unless
                              sign=false)
        mutate: [[old, new], ...] applied to the XML before signing (post) or encoding (redirect)
  op: "response"   a LogoutResponse (Success) to `in_response_to`, same bindings, field SAMLResponse
  op: "check"      verifies the gateway's signed Redirect LogoutRequest `url` with the SP metadata's
                   certificate and prints {"name_id", "session_indexes", "destination", "issuer"}
"""

import base64
import json
import sys
import urllib.parse

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2.config import IdPConfig
from saml2.pack import http_redirect_message
from saml2.saml import NameID, Issuer
from saml2.server import Server
from saml2.s_utils import sid
from saml2.time_util import instant

SIG = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIG = "http://www.w3.org/2001/04/xmlenc#sha256"


def server(req):
    entity = req["idp_entity_id"]
    conf = IdPConfig()
    conf.load(
        {
            "entityid": entity,
            "xmlsec_binary": req.get("xmlsec", "/usr/bin/xmlsec1"),
            "key_file": req["idp_key"],
            "cert_file": req["idp_cert"],
            "metadata": {"local": [req["sp_metadata"]]},
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [(entity + "/sso", BINDING_HTTP_REDIRECT)],
                        "single_logout_service": [
                            ("https://iam.corp.example/nidp/saml2/slo", BINDING_HTTP_REDIRECT),
                        ],
                    },
                    "signing_algorithm": SIG,
                    "digest_algorithm": DIG,
                }
            },
        }
    )
    return Server(config=conf)


def build(idp, req):
    op = req["op"]
    if op == "request":
        msg = samlp.LogoutRequest(
            id=sid(),
            version="2.0",
            issue_instant=req.get("issue_instant") or instant(),
            destination=req["destination"],
            issuer=Issuer(text=req.get("issuer", req["idp_entity_id"])),
            name_id=NameID(format=req.get("name_id_format"), text=req["name_id"]),
            session_index=[samlp.SessionIndex(text=s) for s in req.get("session_indexes") or []],
            not_on_or_after=req.get("expire"),
        )
        node = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest"
        field = "SAMLRequest"
    else:
        msg = samlp.LogoutResponse(
            id=sid(),
            version="2.0",
            issue_instant=instant(),
            destination=req["destination"],
            in_response_to=req.get("in_response_to"),
            issuer=Issuer(text=req.get("issuer", req["idp_entity_id"])),
            status=samlp.Status(status_code=samlp.StatusCode(value="urn:oasis:names:tc:SAML:2.0:status:Success")),
        )
        node = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutResponse"
        field = "SAMLResponse"
    sign = req.get("sign", True)
    relay = req.get("relay_state") or ""
    if req["binding"] == "post":
        if sign:
            from saml2.sigver import pre_signature_part

            msg.signature = pre_signature_part(msg.id, idp.sec.my_cert, 1, sign_alg=SIG, digest_alg=DIG)
        xml = str(msg)
        for old, new in req.get("mutate") or []:
            if old not in xml:
                raise SystemExit(f"mutation target not found: {old!r}")
            xml = xml.replace(old, new)
        if sign:
            xml = idp.sec.sign_statement(xml, node, node_id=msg.id)
        for old, new in req.get("mutate_after") or []:
            if old not in xml:
                raise SystemExit(f"mutation target not found: {old!r}")
            xml = xml.replace(old, new)
        out = {field: base64.b64encode(xml.encode()).decode(), "RelayState": relay, "id": msg.id}
    else:
        xml = str(msg)
        for old, new in req.get("mutate") or []:
            if old not in xml:
                raise SystemExit(f"mutation target not found: {old!r}")
            xml = xml.replace(old, new)
        info = http_redirect_message(
            xml, req["destination"], relay, field, sigalg=SIG if sign else None, sign=sign, backend=idp.sec.sec_backend
        )
        out = {"url": dict(info["headers"])["Location"], "id": msg.id}
    return out


def check(idp, req):
    q = urllib.parse.parse_qs(urllib.parse.urlparse(req["url"]).query)
    got = idp.parse_logout_request(
        q["SAMLRequest"][0],
        BINDING_HTTP_REDIRECT,
        relay_state=q.get("RelayState", [None])[0],
        sigalg=q["SigAlg"][0],
        signature=q["Signature"][0],
    )
    m = got.message
    return {
        "name_id": m.name_id.text,
        "session_indexes": [s.text for s in m.session_index],
        "destination": m.destination,
        "issuer": m.issuer.text,
        "id": m.id,
    }


def main():
    req = json.load(sys.stdin)
    idp = server(req)
    out = check(idp, req) if req["op"] == "check" else build(idp, req)
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
