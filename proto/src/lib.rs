//! Protobuf types of flightrec: the snapshot bundle manifest (`manifest.pb`) and the HTTP collector's `Receipt`.

/// `flightrec.v1`: bundle manifest and collector receipt.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/flightrec.v1.rs"));
}

pub use prost::Message;
pub use prost_types;
