"""An independent SAML 2.0 IdP for the integration tests: pysaml2 builds and signs a Response.

Reads one JSON object on stdin and prints the base64 SAMLResponse (or the XML with "xml": true):
  idp_entity_id, idp_key, idp_cert     the IdP (PEM files)
  sp_metadata                          path of the gateway's SP metadata (from GET /saml/metadata)
  acs, sp_entity_id, in_response_to    where and to whom (in_response_to may be null)
  name_id, name_id_format, attributes  the subject and its attributes ({name: [values]})
  sign_assertion, sign_response        booleans
  encrypt                              encrypt the assertion for the SP (RSA-OAEP + AES-128-CBC,
                                       xmlns:ds repeated on the EncryptedData's KeyInfo)
  encrypt_defaults                     with encrypt: pysaml2's own defaults instead (RSA-OAEP-MGF1P
                                       + 3DES-CBC, xmlns:ds declared once on EncryptedData)
  sha1                                 sign with RSA-SHA1/SHA-1 instead of RSA-SHA256/SHA-256
  mutate                               [[old, new], ...] string replacements applied to the
                                       unsigned XML; the result is then signed as asked (this is how
                                       tests make a correctly signed response with a wrong Audience,
                                       Recipient, time, ...)
  corrupt_assertion_signature          with mutate, sign_assertion and sign_response: one character of
                                       the Assertion's SignatureValue is changed after the Assertion
                                       is signed and before the Response is, so the Response's
                                       signature is valid and the Assertion's is not
  in_response_to_each                  a list of request IDs: one response per ID (each with its
                                       own fresh IDs), printed one per line (examples/saml_acs_cost.rs
                                       needs many unique responses within samael's 150 s window)
"""

import base64
import functools
import json
import re
import sys

import saml2.entity
import saml2.sigver
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.saml import NameID
from saml2.server import Server
from saml2.samlp import response_from_string
from saml2.sigver import pre_encryption_part, pre_signature_part

AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"


def _aes_template(*args, **kwargs):
    # pysaml2 encrypts with 3DES by default; samael (and we) accept AES only.
    kwargs["msg_enc"] = AES128_CBC
    template = pre_encryption_part(*args, **kwargs)
    # samael 0.0.22 deserializes the EncryptedData's KeyInfo only when it declares the xmldsig
    # namespace itself (`xmlns:ds` or `xmlns:dsig` on ds:KeyInfo; its `EncryptedKeyInfo.ds` field
    # is a required attribute). pysaml2 declares it once on EncryptedData, so samael cannot parse
    # the Response at all. Declaring it on KeyInfo too (as Shibboleth-style IdPs do) is equivalent
    # XML.
    template.key_info.extension_attributes["xmlns:ds"] = DS_NS
    return template


_encrypt_assertion = saml2.sigver.CryptoBackendXmlSec1.encrypt_assertion


def _aes_session_key(self, statement, enc_key, template, key_type=None, node_xpath=None, node_id=None):
    # ...and asks xmlsec1 for a 3DES session key regardless of the template: use AES-128.
    return _encrypt_assertion(self, statement, enc_key, template, "aes-128", node_xpath, node_id)




def use_aes_with_local_ds_namespace():
    """The AES-128 / local xmlns:ds variant (what Shibboleth-style IdPs send)."""
    saml2.entity.pre_encryption_part = _aes_template
    saml2.sigver.CryptoBackendXmlSec1.encrypt_assertion = _aes_session_key

SHA256 = ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmlenc#sha256")
SHA1 = ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1")


def main():
    req = json.load(sys.stdin)
    sign_alg, digest_alg = SHA1 if req.get("sha1") else SHA256
    entity = req["idp_entity_id"]
    conf = IdPConfig()
    conf.load(
        {
            "entityid": entity,
            "xmlsec_binary": req.get("xmlsec", "/usr/bin/xmlsec1"),
            "key_file": req["idp_key"],
            "cert_file": req["idp_cert"],
            "encryption_keypairs": [{"key_file": req["idp_key"], "cert_file": req["idp_cert"]}],
            "metadata": {"local": [req["sp_metadata"]]},
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (entity + "/sso", BINDING_HTTP_REDIRECT),
                            (entity + "/sso", BINDING_HTTP_POST),
                        ]
                    },
                    # Inside service.idp, or pysaml2 ignores them (reference/TESTING.md).
                    "signing_algorithm": sign_alg,
                    "digest_algorithm": digest_alg,
                    "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                    "name_id_format": [req.get("name_id_format")],
                }
            },
        }
    )
    idp = Server(config=conf)
    each = req.get("in_response_to_each")
    if each is not None:
        for rid in each:
            sys.stdout.write(respond(idp, dict(req, in_response_to=rid), sign_alg, digest_alg) + "\n")
        return
    sys.stdout.write(respond(idp, req, sign_alg, digest_alg))


def respond(idp, req, sign_alg, digest_alg):
    """One Response to `req` (see the module docstring), base64 unless "xml"."""
    entity = req["idp_entity_id"]
    name_id = NameID(format=req.get("name_id_format"), text=req["name_id"])
    authn = {
        "class_ref": req.get("authn_class", "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"),
        "authn_auth": entity,
    }
    mutate = req.get("mutate") or []
    kwargs = {}
    if req.get("encrypt"):
        if not req.get("encrypt_defaults"):
            use_aes_with_local_ds_namespace()
        kwargs["encrypt_assertion"] = True
        kwargs["encrypt_assertion_self_contained"] = True
    resp = idp.create_authn_response(
        identity=req.get("attributes", {}),
        in_response_to=req.get("in_response_to"),
        destination=req["acs"],
        sp_entity_id=req["sp_entity_id"],
        name_id=name_id,
        authn=authn,
        sign_assertion=bool(req.get("sign_assertion")) and not mutate,
        sign_response=bool(req.get("sign_response")) and not mutate,
        sign_alg=sign_alg,
        digest_alg=digest_alg,
        session_not_on_or_after=None,
        **kwargs,
    )
    xml = str(resp)
    if mutate:
        for old, new in mutate:
            if old not in xml:
                raise SystemExit(f"mutation target not found: {old!r}")
            xml = xml.replace(old, new)
        xml = sign(idp, xml, req, sign_alg, digest_alg)
    if req.get("xml"):
        return xml
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")


def sign(idp, xml, req, sign_alg, digest_alg):
    """Signs the (mutated) response like pysaml2 does: assertion first, then the response."""
    obj = response_from_string(xml)
    cert = idp.sec.my_cert
    assertion = obj.assertion[0] if obj.assertion else None
    if req.get("sign_assertion") and assertion is not None:
        assertion.signature = pre_signature_part(assertion.id, cert, 1, sign_alg=sign_alg, digest_alg=digest_alg)
    if req.get("sign_response"):
        obj.signature = pre_signature_part(obj.id, cert, 1, sign_alg=sign_alg, digest_alg=digest_alg)
    xml = str(obj)
    if req.get("sign_assertion") and assertion is not None:
        xml = idp.sec.sign_statement(
            xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", node_id=assertion.id
        )
        if req.get("corrupt_assertion_signature"):
            # The only SignatureValue with content yet is the Assertion's (the Response's is
            # still the empty template).
            m = re.search(r"<(?:\w+:)?SignatureValue[^>]*>\s*([A-Za-z0-9+/])", xml)
            if m is None:
                raise SystemExit("no signed Assertion to corrupt")
            flipped = "B" if m.group(1) == "A" else "A"
            xml = xml[: m.start(1)] + flipped + xml[m.end(1) :]
    if req.get("sign_response"):
        xml = idp.sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:protocol:Response", node_id=obj.id)
    return xml


if __name__ == "__main__":
    main()
