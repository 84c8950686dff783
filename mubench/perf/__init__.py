"""Cost measurement helpers for the efficiency suite: clocks and interleaved timing, peak memory, FLOP counting and
one optimiser step. Each module measures one thing and says with which tool."""
