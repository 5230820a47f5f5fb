//! Invite links (`dclogin:`, `DCACCOUNT:`) and the terminal QR code.
