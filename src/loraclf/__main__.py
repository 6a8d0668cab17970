from loraclf.cli.main import main

raise SystemExit(main())
