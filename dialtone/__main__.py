from dialtone.cli import main

raise SystemExit(main())
