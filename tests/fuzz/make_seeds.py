"""Writes the SAML seed files of the fuzz corpus (run once; the output is committed).

    tests/peers/saml/.venv/bin/python tests/fuzz/make_seeds.py

The signed responses and logout messages come from the independent pysaml2 peer
(tests/peers/saml/idp.py and slo.py, signing with xmlsec1) with the test-only keys in
tests/fuzz/keys. The hostile seeds are those responses with one attack each: they need no valid
signature, because XML-DSig dereferences and digests every Reference before it checks the
signature value, and the prescan must refuse the rest before any tree is built.

Input formats (see src/fuzzing.rs): a saml_response file is the XML (the harness base64-encodes
it) or `b64:` + the form value as sent; an slo_redirect file is the raw query string, or `xml:`
+ a logout message that the harness deflates and signs with the IdP key (a valid signature, so
the inflate, prescan and checks behind it are reached), or `post:` + XML for the POST binding.
"""

import base64
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
KEYS = os.path.join(HERE, "keys")
PEERS = os.path.join(REPO, "tests", "peers", "saml")
CORPUS = os.path.join(HERE, "corpus")

IDP_ENTITY = "https://iam.corp.example/nidp/saml2/metadata"
SP_ENTITY = "https://sso.corp.example/saml/metadata"
ACS = "https://sso.corp.example/saml/acs"
SLO = "https://sso.corp.example/saml/slo"
REQUEST_ID = "_fuzz-request-1"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"


def peer(script, req):
    base = {
        "idp_entity_id": IDP_ENTITY,
        "idp_key": os.path.join(KEYS, "idp.key"),
        "idp_cert": os.path.join(KEYS, "idp.crt"),
        "sp_metadata": os.path.join(KEYS, "sp-metadata.xml"),
    }
    base.update(req)
    out = subprocess.run(
        [sys.executable, os.path.join(PEERS, script)],
        input=json.dumps(base).encode(),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def response(**kw):
    req = {
        "acs": ACS,
        "sp_entity_id": SP_ENTITY,
        "in_response_to": REQUEST_ID,
        "name_id": "mia@corp.example",
        "name_id_format": EMAIL,
        "attributes": {
            "mail": ["Mia@Corp.Example"],
            "givenName": ["Mia"],
            "groupMembership": ["cn=bc-merchandisers,ou=groups,o=corp"],
        },
        "sign_assertion": True,
        "sign_response": False,
        "xml": True,
    }
    req.update(kw)
    return peer("idp.py", req)


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def sub1(pattern, repl, text):
    out, n = re.subn(pattern, repl, text, count=1)
    assert n == 1, pattern
    return out


def assertion_span(xml):
    a = xml.index("<ns1:Assertion ")
    b = xml.index("</ns1:Assertion>") + len("</ns1:Assertion>")
    return a, b


def signature_span(xml):
    a = xml.index("<ns2:Signature")
    b = xml.index("</ns2:Signature>") + len("</ns2:Signature>")
    return a, b


def evil(assertion):
    a, b = signature_span(assertion)
    unsigned = assertion[:a] + assertion[b:]
    unsigned = sub1(r' ID="[^"]*"', ' ID="_evil"', unsigned)
    return unsigned.replace("mia@corp.example", "boss@corp.example")


def saml_seeds():
    t = "saml_response"
    sa = response()
    write(t, "signed-assertion.xml", sa)
    write(t, "signed-response.xml", response(sign_assertion=False, sign_response=True))
    write(t, "signed-both.xml", response(sign_response=True))
    write(t, "signed-encrypted-assertion.xml", response(encrypt=True, sign_response=True))
    write(t, "signed-sha1.xml", response(sha1=True))
    write(t, "signed-b64-form-value.txt", "b64:" + base64.encodebytes(sa.encode()).decode())

    ref = re.search(r'<ns2:Reference URI="[^"]*">', sa).group(0)
    # Reference URIs outside the document: SSRF, local files, an endless file.
    write(t, "ref-uri-http.xml", sa.replace(ref, '<ns2:Reference URI="http://127.0.0.1:9/ssrf">'))
    write(t, "ref-uri-file.xml", sa.replace(ref, '<ns2:Reference URI="file:///etc/hostname">'))
    write(t, "ref-uri-dev-zero.xml", sa.replace(ref, '<ns2:Reference URI="file:///dev/zero">'))
    # Without transforms the file is digested as bytes, not parsed: /dev/zero never ends.
    write(
        t,
        "ref-uri-dev-zero-no-transforms.xml",
        re.sub(r"<ns2:Transforms>.*?</ns2:Transforms>", "", sa.replace(ref, '<ns2:Reference URI="file:///dev/zero">'), count=1),
    )
    write(t, "ref-uri-relative.xml", sa.replace(ref, '<ns2:Reference URI="idp.key">'))
    write(t, "ref-uri-xpointer.xml", sa.replace(ref, "<ns2:Reference URI=\"#xpointer(/)\">"))
    # A second Reference in SignedInfo to an outside document.
    extra_ref = (
        '<ns2:Reference URI="http://127.0.0.1:9/second"><ns2:DigestMethod '
        'Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ns2:DigestValue>AAAA</ns2:DigestValue>'
        "</ns2:Reference></ns2:SignedInfo>"
    )
    write(t, "ref-second-external.xml", sa.replace("</ns2:SignedInfo>", extra_ref, 1))
    # Manifest and Object.
    manifest = (
        '<ns2:Object><ns2:Manifest Id="m1"><ns2:Reference URI="file:///etc/passwd"><ns2:DigestMethod '
        'Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ns2:DigestValue>AAAA</ns2:DigestValue>'
        "</ns2:Reference></ns2:Manifest></ns2:Object></ns2:Signature>"
    )
    write(t, "manifest.xml", sa.replace("</ns2:Signature>", manifest, 1))
    write(t, "object.xml", sa.replace("</ns2:Signature>", '<ns2:Object Id="o1">text</ns2:Object></ns2:Signature>', 1))
    write(
        t,
        "ref-to-object.xml",
        sa.replace("</ns2:Signature>", '<ns2:Object Id="o1">x</ns2:Object></ns2:Signature>', 1).replace(
            ref, '<ns2:Reference URI="#o1">'
        ),
    )
    # Transforms beyond enveloped-signature and C14N.
    env = '<ns2:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
    xslt = (
        '<ns2:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet '
        'xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="/">'
        '<xsl:copy-of select="document(\'file:///etc/passwd\')"/></xsl:template></xsl:stylesheet></ns2:Transform>'
    )
    write(t, "transform-xslt.xml", sa.replace(env, env + xslt, 1))
    xpath = (
        '<ns2:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116">'
        "<ns2:XPath>count(//. | //@* | //namespace::*) &gt; 0</ns2:XPath></ns2:Transform>"
    )
    write(t, "transform-xpath.xml", sa.replace(env, env + xpath, 1))
    xpath2 = (
        '<ns2:Transform Algorithm="http://www.w3.org/2002/06/xmldsig-filter2">'
        '<dsig-xpath:XPath xmlns:dsig-xpath="http://www.w3.org/2002/06/xmldsig-filter2" Filter="union">/</dsig-xpath:XPath></ns2:Transform>'
    )
    write(t, "transform-xpath-filter2.xml", sa.replace(env, env + xpath2, 1))
    b64t = '<ns2:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#base64"/>'
    write(t, "transform-base64.xml", sa.replace(env, b64t, 1))
    # Keys from the message instead of the metadata.
    write(
        t,
        "keyinfo-retrieval-method.xml",
        sub1(
            r"<ns2:KeyInfo>.*?</ns2:KeyInfo>",
            '<ns2:KeyInfo><ns2:RetrievalMethod URI="http://127.0.0.1:9/key" '
            'Type="http://www.w3.org/2000/09/xmldsig#X509Data"/></ns2:KeyInfo>',
            sa.replace("\n", ""),
        ),
    )
    write(
        t,
        "keyinfo-key-name.xml",
        sub1(r"<ns2:KeyInfo>.*?</ns2:KeyInfo>", "<ns2:KeyInfo><ns2:KeyName>idp</ns2:KeyName></ns2:KeyInfo>", sa.replace("\n", "")),
    )
    # Encodings the prescan must not be fooled by.
    write(t, "decl-utf7.xml", sa.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-7"?>', 1))
    write(t, "decl-utf16-in-utf8.xml", sa.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>', 1))
    write(t, "utf16le-bom.xml", "\ufeff".encode("utf-16-le") + sa.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode("utf-16-le"))
    write(t, "decl-iso-8859-1.xml", sa.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="ISO-8859-1"?>', 1))
    # DTDs and entities.
    write(t, "dtd-internal-entity.xml", sa.replace('<?xml version="1.0"?>', '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "boss">]>', 1).replace("mia@", "&x;@", 1))
    write(t, "dtd-external-entity.xml", sa.replace('<?xml version="1.0"?>', '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>', 1).replace("mia@", "&x;@", 1))
    write(
        t,
        "dtd-billion-laughs.xml",
        sa.replace(
            '<?xml version="1.0"?>',
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
            '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>',
            1,
        ).replace("mia@", "&c;@", 1),
    )
    write(t, "entity-undeclared.xml", sa.replace("mia@", "&x;@", 1))
    write(t, "pi.xml", sa.replace("<ns1:Assertion ", '<?xml-stylesheet href="http://127.0.0.1:9/x"?><ns1:Assertion ', 1))
    # Comment and CDATA injection in signed text.
    write(t, "comment-in-name-id.xml", sa.replace("mia@corp.example", "mia@corp.example<!---->.evil.example", 1))
    write(t, "cdata-in-name-id.xml", sa.replace("mia@corp.example", "mia@corp.example<![CDATA[.evil.example]]>", 1))
    # Signature wrapping shapes (XSW3, XSW4, XSW7, XSW8 on the signed assertion; XSW1 on the response).
    a, b = assertion_span(sa)
    assertion = sa[a:b]
    write(t, "xsw3-evil-before.xml", sa[:a] + evil(assertion) + sa[a:])
    ev = evil(assertion)
    close = ev.rindex("</")
    write(t, "xsw4-evil-wraps.xml", sa[:a] + ev[:close] + assertion + ev[close:] + sa[b:])
    ext = '<ns0:Extensions>' + assertion + "</ns0:Extensions>"
    write(t, "xsw7-extensions.xml", sa[:a] + ext + evil(assertion) + sa[b:])
    sa_, sb_ = signature_span(assertion)
    sig = assertion[sa_:sb_]
    unsigned = assertion[:sa_] + assertion[sb_:]
    write(t, "xsw8-object.xml", sa[:a] + evil(assertion).replace("</ns1:Issuer>", "</ns1:Issuer>" + sig.replace("</ns2:Signature>", "<ns2:Object>" + unsigned + "</ns2:Object></ns2:Signature>"), 1) + sa[b:])
    sr = response(sign_assertion=False, sign_response=True)
    ra, rb = signature_span(sr)
    rsig = sr[ra:rb]
    body = sr[:ra] + sr[rb:]
    root_end = body.index("?>") + 2
    inner = body[root_end:]
    root_open = inner[: inner.index(">") + 1].replace(' ID="', ' ID="_evil', 1)
    ea, eb = assertion_span(sr)
    write(
        t,
        "xsw1-response-in-object.xml",
        body[:root_end] + root_open + rsig.replace("</ns2:Signature>", "<ns2:Object>" + inner + "</ns2:Object></ns2:Signature>") + "</ns0:Response>",
    )
    write(t, "signature-stripped.xml", sa[: a] + unsigned + sa[b:])
    write(t, "status-responder.xml", sa.replace("status:Success", "status:Responder", 1))
    write(t, "destination-other.xml", sa.replace('Destination="' + ACS, 'Destination="https://evil.example/acs', 1))


def utf7_smuggled_dtd():
    """A DTD and an entity reference written in UTF-7: a UTF-8 prescan sees plain text, libxml2
    decodes `<!DOCTYPE ...>` and `&x;` (found while fuzzing: this reaches libxmlsec on main)."""
    def u7(text):
        direct = {"<": "+ADw-", ">": "+AD4-", "&": "+ACY-", "!": "+ACE-", '"': "+ACI-"}
        return "".join(direct.get(c, c) for c in text)

    doc = (
        '<?xml version="1.0" encoding="UTF-7"?>'
        + u7('<!DOCTYPE samlp:Response [<!ENTITY x SYSTEM "http://127.0.0.1:9/xxe">]>')
        + '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r" Version="2.0" '
        f'IssueInstant="2026-12-02T06:36:22Z" Destination="{ACS}" InResponseTo="{REQUEST_ID}">'
        "<saml:Issuer>" + u7("&x;") + "</saml:Issuer><samlp:Status><samlp:StatusCode "
        'Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:Response>'
    )
    write("saml_response", "decl-utf7-smuggled-dtd.xml", doc)


def slo_seeds():
    t = "slo_redirect"
    base = {"destination": SLO, "name_id": "mia@corp.example", "name_id_format": EMAIL, "relay_state": "idp-state-1"}
    req = dict(base, op="request", binding="redirect", session_indexes=["s1"])
    url = json.loads(peer("slo.py", req))["url"]
    write(t, "signed-logout-request.query", url.split("?", 1)[1])
    resp = dict(base, op="response", binding="redirect", in_response_to="_sp-request-1")
    url = json.loads(peer("slo.py", resp))["url"]
    write(t, "signed-logout-response.query", url.split("?", 1)[1])
    unsigned = json.loads(peer("slo.py", dict(req, sign=False)))["url"]
    write(t, "unsigned-logout-request.query", unsigned.split("?", 1)[1])
    write(t, "repeated-param.query", url.split("?", 1)[1] + "&SigAlg=x")
    write(t, "sha1-sigalg.query", re.sub(r"SigAlg=[^&]*", "SigAlg=http%3A%2F%2Fwww.w3.org%2F2000%2F09%2Fxmldsig%23rsa-sha1", url.split("?", 1)[1]))
    # Messages the harness signs with the IdP key (valid signature): what lies behind it.
    post = json.loads(peer("slo.py", dict(req, binding="post")))
    xml = base64.b64decode(post["SAMLRequest"]).decode()
    write(t, "post-signed-logout-request.txt", "post:" + xml)
    unsigned_xml = re.sub(r"<ns\d:Signature.*</ns\d:Signature>", "", xml, flags=re.S)
    write(t, "xml-logout-request.txt", "xml:" + unsigned_xml)
    write(t, "xml-logout-request-comment.txt", "xml:" + unsigned_xml.replace("mia@corp.example", "mia@corp.example<!---->.evil"))
    write(t, "xml-logout-request-dtd.txt", "xml:" + '<!DOCTYPE r [<!ENTITY x "y">]>' + unsigned_xml)
    write(t, "xml-deflate-bomb-ish.txt", "xml:" + unsigned_xml.replace("</ns0:LogoutRequest>", "<ns0:SessionIndex>" + "A" * 70000 + "</ns0:SessionIndex></ns0:LogoutRequest>"))


if __name__ == "__main__":
    saml_seeds()
    utf7_smuggled_dtd()
    slo_seeds()
