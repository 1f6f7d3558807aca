//! Integration tests: the real `berth` binary, run as a user would.

mod bad_input;
mod common;
mod detached;
mod escapes;
mod faults;
mod images;
mod isolation;
mod limits;
mod nethelp;
mod network;
mod peers;
mod ports;
mod registry;
mod roots;
mod run;
mod vm;
mod vm_net;
mod vm_vol;
