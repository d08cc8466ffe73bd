//! `[[permission_set]]`: a named list of control-panel permission codes, written once and named
//! by grants (`control_panel = "merchandiser"` on a template role or an allow rule).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct PermissionSetFile {
    /// The name grants use. Required, unique.
    pub name: String,
    /// Permission codes as the Account API reports them (`Manage_Products`, `Manage_Orders`...).
    /// Required, at least one.
    pub permissions: Vec<String>,
}
