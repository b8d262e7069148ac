from fastq.bench.cli import main

raise SystemExit(main())
