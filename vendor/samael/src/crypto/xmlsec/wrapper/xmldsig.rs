//!
//! Wrapper for XmlSec Signature Context
//!
use crate::crypto::xmlsec::wrapper::bindings;

use super::XmlSecKey;
use super::XmlSecResult;
use super::{XmlDocument, XmlSecError};

use std::os::raw::c_uchar;
use std::ptr::{null, null_mut, NonNull};

/// The verified data for a single `<ds:Reference>`.
pub struct VerifiedReference {
    /// The reference URI attribute, if present.
    pub uri: Option<String>,
    /// The canonicalized XML that xmlsec verified for this reference.
    pub predigest_xml: String,
}

/// Signature signing/verifying context
pub struct XmlSecSignatureContext {
    ctx: NonNull<bindings::xmlSecDSigCtx>,
}

impl XmlSecSignatureContext {
    /// Builds a context, ensuring wrapper is initialized.
    pub fn new() -> XmlSecResult<Self> {
        super::xmlsec_internal::guarantee_xmlsec_init()?;

        let ctx = unsafe { bindings::xmlSecDSigCtxCreate(null_mut()) };
        let ctx = NonNull::new(ctx).ok_or(XmlSecError::ContextInitError)?;
        // Owned from here on, so an error below still destroys the context.
        let this = Self { ctx };
        // storegate: every context is restricted before it sees a document (see `restrict`).
        unsafe { restrict(this.ctx.as_ptr())? };
        Ok(this)
    }

    /// Builds a context with specific flags.
    pub fn new_with_flags(flags: u32) -> XmlSecResult<Self> {
        let mut ctx = Self::new()?;
        unsafe {
            ctx.ctx.as_mut().flags |= flags;
        }
        Ok(ctx)
    }

    /// Retrieves the verified references from `<ds:SignedInfo>`.
    pub fn get_verified_references(&self) -> XmlSecResult<Vec<VerifiedReference>> {
        let mut result = Vec::new();

        unsafe {
            let list_ptr = &self.ctx.as_ref().signedInfoReferences as *const bindings::xmlSecPtrList
                as *mut bindings::xmlSecPtrList;
            let count = bindings::xmlSecPtrListGetSize(list_ptr);

            for i in 0..count {
                let ref_ctx_ptr = bindings::xmlSecPtrListGetItem(list_ptr, i);
                if ref_ctx_ptr.is_null() {
                    return Err(XmlSecError::SigningError);
                }

                let ref_ctx_ptr = ref_ctx_ptr as bindings::xmlSecDSigReferenceCtxPtr;
                let ref_ctx = &*ref_ctx_ptr;

                if ref_ctx.status != bindings::xmlSecDSigStatus_xmlSecDSigStatusSucceeded {
                    return Err(XmlSecError::VerifyError);
                }

                let uri = if ref_ctx.uri.is_null() {
                    None
                } else {
                    let uri_cstr = std::ffi::CStr::from_ptr(ref_ctx.uri as *const std::ffi::c_char);
                    Some(
                        uri_cstr
                            .to_str()
                            .map_err(|_| XmlSecError::InvalidInputString)?
                            .to_string(),
                    )
                };

                let predigest_buf = bindings::xmlSecDSigReferenceCtxGetPreDigestBuffer(ref_ctx_ptr);
                if predigest_buf.is_null() {
                    return Err(XmlSecError::VerifyError);
                }

                let data_ptr = bindings::xmlSecBufferGetData(predigest_buf);
                let data_size = bindings::xmlSecBufferGetSize(predigest_buf);
                let predigest_xml = predigest_xml_from_raw_buffer(data_ptr, data_size as usize)?;

                result.push(VerifiedReference { uri, predigest_xml });
            }
        }

        Ok(result)
    }

    /// Sets the key to use for signature or verification. In case a key had
    /// already been set, the latter one gets released in the optional return.
    pub fn insert_key(&mut self, key: XmlSecKey) -> Option<XmlSecKey> {
        let mut old = None;

        unsafe {
            let ctx = self.ctx.as_mut();
            if !ctx.signKey.is_null() {
                old = Some(XmlSecKey::from_ptr(ctx.signKey));
            }

            ctx.signKey = XmlSecKey::leak(key);
        }

        old
    }

    /// Takes a [`XmlDocument`][xmldoc] and attempts to sign it. For this to work it has to have a properly structured
    /// `<dsig:Signature>` node within, and a XmlSecKey must have been previously set with [`insert_key`][inskey].
    ///
    /// # Errors
    ///
    /// If key has not been previously set or document is malformed.
    ///
    /// [xmldoc]: http://kwarc.github.io/rust-libxml/libxml/tree/document/struct.Document.html
    /// [inskey]: struct.XmlSecSignatureContext.html#method.insert_key
    pub fn sign_document(&self, doc: &XmlDocument, id_attr: Option<&str>) -> XmlSecResult<()> {
        self.key_is_set()?;

        let doc_ptr = doc.doc_ptr();
        let root = if let Some(root) = doc.get_root_element() {
            root
        } else {
            return Err(XmlSecError::RootNotFound);
        };

        let root_ptr = root.node_ptr() as *mut bindings::xmlNode;

        if let Some(id_attr) = id_attr {
            let cid =
                std::ffi::CString::new(id_attr).map_err(|_| XmlSecError::InvalidInputString)?;

            unsafe {
                let mut list = [cid.as_bytes().as_ptr(), null()];
                bindings::xmlSecAddIDs(
                    doc_ptr as *mut bindings::xmlDoc,
                    root_ptr,
                    list.as_mut_ptr(),
                );
            }
        }

        let signode = find_signode(root_ptr)?;
        self.sign_node_raw(signode)
    }

    /// Takes a [`XmlDocument`][xmldoc] and attempts to verify its signature. For this to work it has to have a properly
    /// structured and signed `<dsig:Signature>` node within, and a XmlSecKey must have been previously set with
    /// [`insert_key`][inskey].
    ///
    /// # Errors
    ///
    /// If key has not been previously set or document is malformed.
    ///
    /// [xmldoc]: http://kwarc.github.io/rust-libxml/libxml/tree/document/struct.Document.html
    /// [inskey]: struct.XmlSecSignatureContext.html#method.insert_key
    pub fn verify_document(&self, doc: &XmlDocument, id_attr: Option<&str>) -> XmlSecResult<bool> {
        self.key_is_set()?;

        let doc_ptr = doc.doc_ptr();
        let root = if let Some(root) = doc.get_root_element() {
            root
        } else {
            return Err(XmlSecError::RootNotFound);
        };

        let root_ptr = root.node_ptr() as *mut bindings::xmlNode;

        if let Some(id_attr) = id_attr {
            let cid =
                std::ffi::CString::new(id_attr).map_err(|_| XmlSecError::InvalidInputString)?;

            unsafe {
                let mut list = [cid.as_bytes().as_ptr(), null()];
                bindings::xmlSecAddIDs(
                    doc_ptr as *mut bindings::xmlDoc,
                    root_ptr,
                    list.as_mut_ptr(),
                );
            }
        }

        let signode = find_signode(root_ptr)?;
        self.verify_node_raw(signode)
    }

    /// Takes a `<dsig:Signature>` [`Node`][xmlnode] and attempts to verify it. For this to work, a XmlSecKey must have
    /// been previously set with [`insert_key`][inskey].
    ///
    /// # Errors
    ///
    /// If key has not been previously set, the node is not a signature node or the document is malformed.
    ///
    /// [xmlnode]: http://kwarc.github.io/rust-libxml/libxml/tree/document/struct.Node.html
    /// [inskey]: struct.XmlSecSignatureContext.html#method.insert_key
    pub fn verify_node(&self, sig_node: &libxml::tree::Node) -> XmlSecResult<bool> {
        self.key_is_set()?;
        ensure_signature_node(sig_node)?;

        let node_ptr = sig_node.node_ptr();
        self.verify_node_raw(node_ptr as *mut bindings::xmlNode)
    }
}

impl XmlSecSignatureContext {
    /// storegate: [`Self::verify_node`] with a key the caller keeps (an IdP key loaded once, not
    /// per message). libxmlsec only reads the context's key: it is matched against the key
    /// requirements and the signature transform takes its own reference to the EVP key. The
    /// context forgets the key before returning, so destroying the context never frees it. A
    /// context that already holds a key or a keys manager is refused (that key would be lost).
    ///
    /// The key is handed over by a keys manager whose only job is to return it
    /// ([`hand_over_key`]), not set on the context beforehand: that way the key requirement's
    /// *type* (public/private) can be cleared before libxmlsec matches the key against it. With
    /// OpenSSL 3 that check exports the RSA key's parameters on every signature to learn whether
    /// it holds a private part (0.25 million instructions per sign-in, callgrind), and it cannot
    /// refuse our keys: they come from the IdP's certificates, so they are public, which is what
    /// verification requires. The key's algorithm is still matched against the signature
    /// method's (an RSA key for an RSA signature), and KeyInfo is still never read.
    pub fn verify_node_with_key(
        &mut self,
        sig_node: &libxml::tree::Node,
        key: &XmlSecKey,
    ) -> XmlSecResult<bool> {
        ensure_signature_node(sig_node)?;
        let mngr = unsafe { bindings::xmlSecKeysMngrCreate() };
        if mngr.is_null() {
            return Err(XmlSecError::ContextInitError);
        }
        unsafe {
            let ctx = self.ctx.as_mut();
            if !ctx.signKey.is_null() || !ctx.keyInfoReadCtx.keysMngr.is_null() {
                bindings::xmlSecKeysMngrDestroy(mngr);
                return Err(XmlSecError::KeyLoadError);
            }
            (*mngr).getKey = Some(hand_over_key);
            ctx.keyInfoReadCtx.keysMngr = mngr;
            ctx.keyInfoReadCtx.userData = key.as_ptr() as *mut std::os::raw::c_void;
        }
        let outcome = self.verify_node_raw(sig_node.node_ptr() as *mut bindings::xmlNode);
        unsafe {
            let ctx = self.ctx.as_mut();
            ctx.signKey = null_mut();
            ctx.keyInfoReadCtx.keysMngr = null_mut();
            ctx.keyInfoReadCtx.userData = null_mut();
            bindings::xmlSecKeysMngrDestroy(mngr);
        }
        outcome
    }
}

/// storegate: refuses a node that is not a `<dsig:Signature>` element (shared by both verifiers).
fn ensure_signature_node(sig_node: &libxml::tree::Node) -> XmlSecResult<()> {
    match sig_node.get_namespace() {
        Some(ns)
            if ns.get_href() == "http://www.w3.org/2000/09/xmldsig#"
                && sig_node.get_name() == "Signature" =>
        {
            Ok(())
        }
        _ => Err(XmlSecError::NotASignatureNode),
    }
}

/// storegate: the keys manager's `getKey` for [`XmlSecSignatureContext::verify_node_with_key`]:
/// returns the caller's key (in the key info context's `userData`) without reading KeyInfo, and
/// clears the requirement's key type (see there why). libxmlsec calls it only when the context
/// has no key yet, just before it matches the key against the requirement.
unsafe extern "C" fn hand_over_key(
    _key_info_node: bindings::xmlNodePtr,
    key_info_ctx: bindings::xmlSecKeyInfoCtxPtr,
) -> bindings::xmlSecKeyPtr {
    if key_info_ctx.is_null() {
        return null_mut();
    }
    let key_info_ctx = &mut *key_info_ctx;
    key_info_ctx.keyReq.keyType = bindings::xmlSecKeyDataTypeUnknown;
    key_info_ctx.userData as bindings::xmlSecKeyPtr
}

/// storegate: what a `<ds:Reference>` may point at and run. libxmlsec's defaults dereference any
/// URI (`http://`, `file://`: a blind server-side request, or a read of `/dev/zero` that kills the
/// process) and run any registered transform (XSLT, XPath) *before* the signature value is
/// checked, so every context is restricted here, inside the library, whatever the caller checked:
/// - reference URIs: only `""` and same-document `#id` (no local files, no remote URLs);
/// - `<ds:Manifest>` references are never processed;
/// - `<ds:RetrievalMethod>` and `<xenc:EncryptedKey>` inside `<ds:KeyInfo>` are never followed
///   (keys come only from the caller, i.e. the IdP's metadata; KeyInfo is not read at all while a
///   key is set, this is a second fence);
/// - reference transforms: enveloped-signature and inclusive/exclusive C14N without comments,
///   digests SHA-1/SHA-2 (the per-IdP SHA-1 opt-in is enforced by the caller's allow-list);
/// - SignedInfo: the same C14N methods and RSA/ECDSA signature methods only.
///
/// A transform missing from this build of libxmlsec is simply not enabled. Once a list holds one
/// entry it is an allow-list: everything else is refused by libxmlsec itself.
const REFERENCE_TRANSFORMS: &[(&str, u32)] = &[
    (
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        bindings::xmlSecTransformUsageDSigTransform,
    ),
    (
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        bindings::xmlSecTransformUsageDSigTransform,
    ),
    (
        "http://www.w3.org/2006/12/xml-c14n11",
        bindings::xmlSecTransformUsageDSigTransform,
    ),
    (
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        bindings::xmlSecTransformUsageDSigTransform,
    ),
    (
        "http://www.w3.org/2000/09/xmldsig#sha1",
        bindings::xmlSecTransformUsageDigestMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmlenc#sha256",
        bindings::xmlSecTransformUsageDigestMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        bindings::xmlSecTransformUsageDigestMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmlenc#sha512",
        bindings::xmlSecTransformUsageDigestMethod,
    ),
];

const SIGNATURE_TRANSFORMS: &[(&str, u32)] = &[
    (
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        bindings::xmlSecTransformUsageC14NMethod,
    ),
    (
        "http://www.w3.org/2006/12/xml-c14n11",
        bindings::xmlSecTransformUsageC14NMethod,
    ),
    (
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        bindings::xmlSecTransformUsageC14NMethod,
    ),
    (
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        bindings::xmlSecTransformUsageSignatureMethod,
    ),
];

/// The registered transform for `href` with `usage`, or null when this libxmlsec lacks it.
unsafe fn transform_by_href(href: &str, usage: u32) -> XmlSecResult<bindings::xmlSecTransformId> {
    let c = std::ffi::CString::new(href).map_err(|_| XmlSecError::InvalidInputString)?;
    Ok(unsafe {
        bindings::xmlSecTransformIdListFindByHref(
            bindings::xmlSecTransformIdsGet(),
            c.as_ptr() as *const c_uchar,
            usage,
        )
    })
}

/// storegate: the allowed transforms as libxmlsec's registry names them (pointers to its static
/// transform classes), looked up once: the registry does not change after initialisation, and
/// looking up every name for every context was about 2% of a sign-in (callgrind, issue 15).
struct AllowedTransforms {
    reference: Vec<bindings::xmlSecTransformId>,
    signature: Vec<bindings::xmlSecTransformId>,
}

// SAFETY: the ids point at libxmlsec's transform classes, static and never written after
// initialisation; they are only passed back to libxmlsec.
unsafe impl Send for AllowedTransforms {}
unsafe impl Sync for AllowedTransforms {}

static ALLOWED_TRANSFORMS: std::sync::OnceLock<AllowedTransforms> = std::sync::OnceLock::new();

/// The allowed transforms this build of libxmlsec has (one missing is simply not enabled).
fn allowed_transforms() -> XmlSecResult<&'static AllowedTransforms> {
    if let Some(allowed) = ALLOWED_TRANSFORMS.get() {
        return Ok(allowed);
    }
    let present = |list: &[(&str, u32)]| -> XmlSecResult<Vec<bindings::xmlSecTransformId>> {
        let mut ids = Vec::new();
        for (href, usage) in list {
            let id = unsafe { transform_by_href(href, *usage)? };
            if !id.is_null() {
                ids.push(id);
            }
        }
        Ok(ids)
    };
    let looked_up = AllowedTransforms {
        reference: present(REFERENCE_TRANSFORMS)?,
        signature: present(SIGNATURE_TRANSFORMS)?,
    };
    // Two threads may look up at once; they find the same ids, the first one is kept.
    Ok(ALLOWED_TRANSFORMS.get_or_init(|| looked_up))
}

/// Applies storegate's restrictions (see [`REFERENCE_TRANSFORMS`]) to a fresh context.
unsafe fn restrict(ctx: *mut bindings::xmlSecDSigCtx) -> XmlSecResult<()> {
    let allowed = allowed_transforms()?;
    // An empty list would mean "everything": never run unrestricted.
    if allowed.reference.is_empty() || allowed.signature.is_empty() {
        return Err(XmlSecError::ContextInitError);
    }
    unsafe {
        (*ctx).enabledReferenceUris =
            bindings::xmlSecTransformUriTypeEmpty | bindings::xmlSecTransformUriTypeSameDocument;
        (*ctx).flags |= bindings::XMLSEC_DSIG_FLAGS_IGNORE_MANIFESTS;
        (*ctx).keyInfoReadCtx.maxRetrievalMethodLevel = 0;
        (*ctx).keyInfoReadCtx.maxEncryptedKeyLevel = 0;
        for id in &allowed.reference {
            if bindings::xmlSecDSigCtxEnableReferenceTransform(ctx, *id) < 0 {
                return Err(XmlSecError::ContextInitError);
            }
        }
        for id in &allowed.signature {
            if bindings::xmlSecDSigCtxEnableSignatureTransform(ctx, *id) < 0 {
                return Err(XmlSecError::ContextInitError);
            }
        }
    }
    Ok(())
}

fn predigest_xml_from_raw_buffer(
    data_ptr: *const c_uchar,
    data_size: usize,
) -> XmlSecResult<String> {
    if data_size == 0 {
        return Ok(String::new());
    }

    if data_ptr.is_null() {
        return Err(XmlSecError::VerifyError);
    }

    let data_slice = unsafe { std::slice::from_raw_parts(data_ptr, data_size) };
    let predigest_xml = std::str::from_utf8(data_slice)
        .map_err(|_| XmlSecError::InvalidInputString)?
        .to_string();
    Ok(predigest_xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predigest_xml_from_raw_buffer_accepts_empty_buffers() {
        let predigest_xml = predigest_xml_from_raw_buffer(std::ptr::null(), 0)
            .expect("zero-length pre-digest buffers should be accepted");

        assert!(predigest_xml.is_empty());
    }

    #[test]
    fn predigest_xml_from_raw_buffer_rejects_invalid_utf8() {
        let bytes = [0xff];
        let error = predigest_xml_from_raw_buffer(bytes.as_ptr(), bytes.len())
            .expect_err("non-utf8 pre-digest buffers should be rejected");

        assert!(matches!(error, XmlSecError::InvalidInputString));
    }
}

impl XmlSecSignatureContext {
    fn key_is_set(&self) -> XmlSecResult<()> {
        unsafe {
            if !self.ctx.as_ref().signKey.is_null() {
                Ok(())
            } else {
                Err(XmlSecError::KeyNotLoaded)
            }
        }
    }

    fn sign_node_raw(&self, node: *mut bindings::xmlNode) -> XmlSecResult<()> {
        let rc = unsafe { bindings::xmlSecDSigCtxSign(self.ctx.as_ptr(), node) };

        if rc < 0 {
            Err(XmlSecError::SigningError)
        } else {
            Ok(())
        }
    }

    fn verify_node_raw(&self, node: *mut bindings::xmlNode) -> XmlSecResult<bool> {
        let rc = unsafe { bindings::xmlSecDSigCtxVerify(self.ctx.as_ptr(), node) };

        if rc < 0 {
            return Err(XmlSecError::VerifyError);
        }

        match unsafe { self.ctx.as_ref().status } {
            bindings::xmlSecDSigStatus_xmlSecDSigStatusSucceeded => Ok(true),
            _ => Ok(false),
        }
    }
}

impl Drop for XmlSecSignatureContext {
    fn drop(&mut self) {
        unsafe { bindings::xmlSecDSigCtxDestroy(self.ctx.as_ptr()) };
    }
}

fn find_signode(tree: *mut bindings::xmlNode) -> XmlSecResult<*mut bindings::xmlNode> {
    let signode = unsafe {
        bindings::xmlSecFindNode(
            tree,
            &bindings::xmlSecNodeSignature as *const c_uchar,
            &bindings::xmlSecDSigNs as *const c_uchar,
        )
    };

    if signode.is_null() {
        return Err(XmlSecError::NodeNotFound);
    }

    Ok(signode)
}
