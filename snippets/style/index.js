import './base.css';
import './runtime.css';
import './resources.css';
