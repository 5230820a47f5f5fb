//! SMTP reply lines (basic and enhanced codes).
