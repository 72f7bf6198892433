"""Running a trained checkpoint outside training: loading it, streaming event sources, slicing
them into windows and stepping the network once per window."""
