from ebmbench.cli import main

raise SystemExit(main())
