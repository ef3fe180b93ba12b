//! The README's record example ("Records and times") as a program: the tests check that the
//! README shows exactly the code between the two marker comments, and `cargo test` compiles
//! it (with the `derive` feature).
//!
//! Run, with `mmshared` running: `cargo run -p mmshare --features derive --example records`

// README: begin
use bytemuck::{Pod, Zeroable};
use mmshare::{Access, Client, DateTime64, Record, units::Nanos};

#[derive(Clone, Copy, Pod, Zeroable, Record)]
#[repr(C)]
struct Detection {
    x: f32,
    y: f32,
    id: u32,
    #[mmshare(padding)]
    _pad: [u8; 4], // explicit: Pod types have no hidden padding
    t: DateTime64<Nanos>, // '<M8[ns]'
    score: [f32; 2],      // a subarray field, '<f4', (2,)
}
// dtype: [('x', '<f4'), ('y', '<f4'), ('id', '<u4'), ('', '|V4'), ('t', '<M8[ns]'),
//         ('score', '<f4', (2,))]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_default()?;
    let dets = client.create_array::<Detection>("detections.rs", &[100])?;
    dets.write_with(|v| v.fill(Detection::zeroed()))?;
    // Opened as another struct (other names, offsets or types), it is an error, not a misread.
    let _same = client.open::<Detection>("detections.rs", Access::Read)?;
    Ok(())
}
// README: end
