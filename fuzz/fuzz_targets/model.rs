//! The model-description (computation graph) parser: a TOML file of `[[node]]` tables into a
//! validated DAG, then the round trip through the file `Graph::to_toml` writes.
#![no_main]

use std::path::Path;

use arelax::graph::Graph;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz-model.toml");
    let Ok(g) = Graph::parse(path, &text) else {
        return;
    };
    // The invariants the engine relies on.
    assert_eq!(g.output, g.nodes.len() - 1, "the output is the last node");
    for (i, node) in g.nodes.iter().enumerate() {
        assert!(node.inputs.iter().all(|&p| p < i), "topological order");
        assert_eq!(
            i == 0,
            node.inputs.is_empty(),
            "only the input node has no inputs"
        );
        assert!(
            node.shape.size() > 0,
            "node '{}' has an empty shape",
            node.id
        );
    }
    let _ = (g.describe(), g.param_count(), g.depth());

    let written = g.to_toml();
    let again = Graph::parse(path, &written)
        .unwrap_or_else(|e| panic!("written model does not parse: {e}\n{written}"));
    assert_eq!(
        again.nodes, g.nodes,
        "nodes changed in the round trip through\n{written}"
    );
    assert_eq!((again.output, again.loss), (g.output, g.loss));
});
