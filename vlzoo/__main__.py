from vlzoo.cli import main

raise SystemExit(main())
