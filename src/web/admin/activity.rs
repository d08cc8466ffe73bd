//! What the console's activity is made of, whichever replica's view it shows: a denial line, the
//! counts of one hour, and the events' display names. Both sources share it: this process's
//! observer (`console::RecentActivity`) and the central audit table (`fleet`).

use crate::audit::EventKind;

/// Denials kept for the table.
pub const MAX_DENIALS: usize = 100;
/// Hours in the chart.
pub const HOURS: usize = 24;

/// One denial as the console's table shows it.
#[derive(Clone, Debug)]
pub struct Denial {
    pub time: String,
    pub event: &'static str,
    pub who: String,
    pub store: String,
    pub rule: String,
    pub reason: String,
}

/// The counts of one hour, a column of the chart.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Hour {
    /// Unix hour (seconds / 3600).
    pub hour: i64,
    pub sign_ins: u32,
    pub launches: u32,
    pub denials: u32,
}

/// How the console names an event kind.
pub fn event_name(e: EventKind) -> &'static str {
    match e {
        EventKind::SignIn => "sign-in",
        EventKind::Launch => "launch",
        EventKind::Admin => "admin",
        EventKind::Webhook => "webhook",
        EventKind::ControlPanelOpen => "control panel",
        EventKind::ForwardAuth => "forward-auth",
        _ => "other",
    }
}

/// [`event_name`] for an event's name as written in the trail (`sign_in`).
pub fn event_label(name: &str) -> &'static str {
    match name {
        "sign_in" => "sign-in",
        "launch" => "launch",
        "admin" => "admin",
        "webhook" => "webhook",
        "forward_auth" => "forward-auth",
        "control_panel_open" => "control panel",
        _ => "other",
    }
}
