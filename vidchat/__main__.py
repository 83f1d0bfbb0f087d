from vidchat.cli import main

raise SystemExit(main())
