// Merged into @jupyterlab/builder's webpack configuration ("webpackConfig" in
// package.json). Module ids that do not depend on the folder the extension is built in:
// webpack's default for production ("deterministic") hashes the module federation
// container's identifier, which holds the exposed modules' absolute paths, so two
// checkouts would build different bytes, and the runtime images different hashes.
module.exports = {
  optimization: {
    moduleIds: 'natural'
  }
};
